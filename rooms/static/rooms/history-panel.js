/**
 * history-panel.js — the editor page's history: a timeline over the room's versions (and the
 * times they were made), the text at any of them, playback at several speeds, the diff against
 * now, restore, and downloads (the code as a file, the history as JSON).
 *
 * Everything comes over the page's own connection (collab-client.js: textAt, changes, times,
 * diff, restore; docs/protocol.md, "History"). Moving the slider asks for the text at that
 * version only (the server answers from its copies, however long the history); playback reads
 * the op log a page at a time, never all of it. The live editor stays underneath and keeps
 * receiving changes; "Back to live" shows it again.
 */
import {
  EditorState,
  EditorView,
  basicSetup,
  indentUnit,
  python,
} from "./vendor/codemirror.bundle.js";
import {opToChanges, ot} from "./collab-client.js";

const PAGE = 500; // op log entries per request during playback
const BASE_RATE = 4; // changes per second at 1×
const SPEEDS = [1, 4, 16, 64];
const TICK_MS = 50;
const SCRUB_MS = 120; // the slider asks for the text once it rests this long

function element(tag, properties = {}, ...children) {
  const node = Object.assign(document.createElement(tag), properties);
  node.append(...children);
  return node;
}

function button(label, className = "button") {
  return element("button", {type: "button", className, textContent: label});
}

function localTime(ts) {
  return new Date(ts).toLocaleString();
}

/** A time as the value of <input type="datetime-local"> (local time, seconds). */
function inputTime(ts) {
  const date = new Date(ts - new Date(ts).getTimezoneOffset() * 60_000);
  return date.toISOString().slice(0, 19);
}

function download(name, data, type) {
  const link = element("a", {href: URL.createObjectURL(new Blob([data], {type})), download: name});
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

export class HistoryPanel {
  /**
   * doc: the page's CollabClient; pane: the element holding the live editor (`live`), in which
   * the panel shows instead; toast(message); token: the room's token, for REST downloads.
   */
  constructor({doc, roomId, token, pane, live, toast}) {
    this.doc = doc;
    this.roomId = roomId;
    this.token = token;
    this.live = live;
    this.toast = toast;
    this.version = null; // the version shown
    this.text = "";
    this.scrub = null;
    this.request = 0; // the latest text request: older answers are dropped
    this.playing = null; // {timer, page, index, budget}
    this.build(pane);
    doc.on("change", () => this.onHead());
  }

  build(pane) {
    this.slider = element("input", {
      type: "range",
      min: "0",
      step: "1",
      className: "history-slider",
      ariaLabel: "Version",
    });
    this.slider.id = "history-slider";
    this.position = element("span", {className: "history-position", id: "history-position"});
    this.play = button("Play");
    this.play.id = "history-play";
    this.speed = element(
      "select",
      {id: "history-speed", className: "history-speed", ariaLabel: "Playback speed"},
      ...SPEEDS.map((speed) => element("option", {value: String(speed), textContent: `${speed}×`})),
    );
    this.close_ = button("Back to live");
    this.close_.id = "history-close";
    this.start = element("span", {className: "history-time"});
    this.end = element("span", {className: "history-time"});
    this.at = element("input", {
      type: "datetime-local",
      step: "1",
      id: "history-at",
      className: "history-at",
      ariaLabel: "Go to a time",
    });
    this.diffButton = button("Diff with now");
    this.diffButton.id = "history-diff";
    this.diffButton.setAttribute("aria-pressed", "false");
    this.restoreButton = button("Restore this version", "button button-primary");
    this.restoreButton.id = "history-restore";
    const code = button("Download code");
    code.id = "history-download-code";
    const json = button("Download history (JSON)");
    json.id = "history-download-json";
    this.viewHolder = element("div", {className: "history-view", id: "history-view"});
    this.diffView = element("div", {className: "history-diff", id: "history-diff-view"});
    this.diffView.hidden = true;
    this.root = element(
      "section",
      {className: "history", id: "history", hidden: true, ariaLabel: "History"},
      element(
        "div",
        {className: "history-bar"},
        this.play,
        this.speed,
        this.slider,
        this.position,
        this.close_,
      ),
      element(
        "div",
        {className: "history-bar history-bar-second"},
        this.start,
        element("label", {className: "history-at-label"}, "Go to ", this.at),
        this.end,
        element("span", {className: "history-spacer"}),
        this.diffButton,
        this.restoreButton,
        code,
        json,
      ),
      this.viewHolder,
      this.diffView,
    );
    pane.prepend(this.root);

    this.slider.addEventListener("input", () => {
      this.stop();
      this.showPosition(Number(this.slider.value), null);
      clearTimeout(this.scrub);
      this.scrub = setTimeout(() => this.show(Number(this.slider.value)), SCRUB_MS);
    });
    this.at.addEventListener("change", () => this.goToTime());
    this.play.addEventListener("click", () => (this.playing ? this.stop() : this.startPlaying()));
    this.close_.addEventListener("click", () => this.close());
    this.diffButton.addEventListener("click", () => this.toggleDiff());
    this.restoreButton.addEventListener("click", () => this.restore());
    code.addEventListener("click", () =>
      download(`${this.roomId}-v${this.version}.py`, this.text, "text/x-python"),
    );
    json.addEventListener("click", () => this.downloadHistory());
    this.root.addEventListener("keydown", (event) => event.key === "Escape" && this.close());
  }

  get isOpen() {
    return !this.root.hidden;
  }

  async open() {
    this.root.hidden = false;
    this.live.hidden = true;
    this.restoreButton.hidden = this.doc.readOnly;
    this.view ??= new EditorView({
      parent: this.viewHolder,
      state: this.state(""),
    });
    this.onHead();
    this.slider.value = String(this.doc.version);
    this.show(this.doc.version);
    try {
      const {times} = await this.doc.times();
      this.start.textContent = `Created ${localTime(times[0][1])}`;
      this.at.min = inputTime(times[0][1]);
    } catch (failure) {
      this.toast(`Could not read the history: ${failure.message}`);
    }
    this.slider.focus();
  }

  close() {
    this.stop();
    clearTimeout(this.scrub);
    this.root.hidden = true;
    this.live.hidden = false;
    this.diffView.hidden = true;
    this.diffButton.setAttribute("aria-pressed", "false");
  }

  state(text) {
    return EditorState.create({
      doc: text,
      extensions: [
        basicSetup,
        python(),
        indentUnit.of("    "),
        EditorState.lineSeparator.of("\n"),
        EditorState.readOnly.of(true),
        EditorView.editable.of(false),
        EditorView.contentAttributes.of({"aria-label": "The code at this version"}),
      ],
    });
  }

  /** The head moved (a change arrived): the slider reaches it. */
  onHead() {
    const head = this.doc.version ?? 0;
    this.slider.max = String(head);
    this.end.textContent = `Now: version ${head}`;
    if (this.version !== null) this.showPosition(this.version, this.ts);
  }

  showPosition(version, ts) {
    const when = ts ? ` · ${localTime(ts)}` : "";
    this.position.textContent = `Version ${version} of ${this.doc.version}${when}`;
  }

  /** Show the text at `version` (the answer to the latest request wins). */
  async show(version) {
    const request = ++this.request;
    let answer;
    try {
      answer = await this.doc.textAt(version);
    } catch (failure) {
      this.toast(`Could not read version ${version}: ${failure.message}`);
      return;
    }
    if (request !== this.request) return;
    this.setText(answer.version, answer.code, answer.ts);
  }

  setText(version, text, ts) {
    this.version = version;
    this.text = text;
    this.ts = ts;
    this.slider.value = String(version);
    this.view.setState(this.state(text));
    this.root.dataset.version = String(version);
    this.showPosition(version, ts);
    if (!this.diffView.hidden) this.showDiff();
  }

  async goToTime() {
    if (!this.at.value) return;
    this.stop();
    const request = ++this.request;
    try {
      const answer = await this.doc.textAt({at: new Date(this.at.value).toISOString()});
      if (request === this.request) this.setText(answer.version, answer.code, answer.ts);
    } catch (failure) {
      this.toast(failure.message);
    }
  }

  // -- playback ------------------------------------------------------------------------------

  async startPlaying() {
    if (this.version === null) return;
    const playing = (this.playing = {timer: null, page: [], index: 0, budget: 0});
    this.play.textContent = "Pause";
    this.root.dataset.playing = "true";
    if (this.version >= this.doc.version) await this.show(0); // at now: from the start
    else this.request++; // an answer still on its way would jump back
    if (this.playing === playing) this.tick();
  }

  stop() {
    if (!this.playing) return;
    clearTimeout(this.playing.timer);
    this.playing = null;
    this.play.textContent = "Play";
    delete this.root.dataset.playing;
  }

  /** Apply the next changes (speed × BASE_RATE per second), reading pages as needed. */
  async tick() {
    const playing = this.playing;
    if (!playing) return;
    playing.budget += (Number(this.speed.value) * BASE_RATE * TICK_MS) / 1000;
    const entries = [];
    while (playing.budget >= 1) {
      if (playing.index >= playing.page.length) {
        const from = entries.length ? entries[entries.length - 1].version : this.version;
        if (from >= this.doc.version) break;
        let answer;
        try {
          answer = await this.doc.changes(from, PAGE);
        } catch (failure) {
          this.toast(`Playback stopped: ${failure.message}`);
          this.stop();
          return;
        }
        if (this.playing !== playing) return;
        playing.page = answer.ops;
        playing.index = 0;
        if (!playing.page.length) break;
      }
      entries.push(playing.page[playing.index++]);
      playing.budget -= 1;
    }
    // One transaction per change: each one's offsets are on the text before it.
    for (const entry of entries) {
      const changes = opToChanges(this.text, entry.op);
      this.text = ot.apply(this.text, entry.op);
      this.view.dispatch({
        changes,
        selection: changes.length ? {anchor: changes[0].from} : undefined,
        scrollIntoView: changes.length > 0,
      });
      this.version = entry.version;
      this.ts = entry.ts;
    }
    if (entries.length) {
      this.slider.value = String(this.version);
      this.root.dataset.version = String(this.version);
      this.showPosition(this.version, this.ts);
    }
    if (this.version >= this.doc.version) {
      this.stop();
      return;
    }
    playing.timer = setTimeout(() => this.tick(), TICK_MS);
  }

  // -- diff, restore, downloads ----------------------------------------------------------------

  toggleDiff() {
    const showing = this.diffView.hidden;
    this.diffView.hidden = !showing;
    this.viewHolder.hidden = showing;
    this.diffButton.setAttribute("aria-pressed", String(showing));
    if (showing) this.showDiff();
  }

  async showDiff() {
    let answer;
    try {
      answer = await this.doc.diff(this.version);
    } catch (failure) {
      this.toast(`Could not compare: ${failure.message}`);
      return;
    }
    const heading = element(
      "p",
      {className: "history-diff-title"},
      `Version ${answer.from} → now (version ${answer.to}): `,
      answer.hunks.length ? "" : "no difference",
    );
    const hunks = answer.hunks.map((hunk) =>
      element(
        "div",
        {className: "history-hunk"},
        element("div", {
          className: "history-hunk-head",
          textContent: `@@ -${hunk.old_start},${hunk.old_lines} +${hunk.new_start},${hunk.new_lines} @@`,
        }),
        ...hunk.lines.map((line) =>
          element("div", {
            className: `history-line history-line-${{"+": "add", "-": "del"}[line[0]] ?? "same"}`,
            textContent: line,
          }),
        ),
      ),
    );
    this.diffView.replaceChildren(heading, ...hunks);
  }

  async restore() {
    const version = this.version;
    if (version === null) return;
    const ask = `Restore version ${version}? The text becomes what it was then, for everyone. Nothing is lost: the current text stays in the history.`;
    if (!window.confirm(ask)) return;
    this.restoreButton.disabled = true;
    try {
      const answer = await this.doc.restore(version);
      this.toast(`Version ${version} restored as version ${answer.version}`);
      this.close();
    } catch (failure) {
      this.toast(`Could not restore: ${failure.message}`);
    } finally {
      this.restoreButton.disabled = false;
    }
  }

  async downloadHistory() {
    const headers = {Accept: "application/json"};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    try {
      const response = await fetch(`/rooms/${encodeURIComponent(this.roomId)}/history`, {headers});
      if (!response.ok) throw new Error((await response.json()).error ?? response.statusText);
      download(`${this.roomId}-history.json`, await response.text(), "application/json");
    } catch (failure) {
      this.toast(`Could not download the history: ${failure.message}`);
    }
  }
}
