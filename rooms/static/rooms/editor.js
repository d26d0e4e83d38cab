/**
 * editor.js — the editor page (rooms/templates/rooms/editor.html, served by rooms/pages.py).
 *
 * Binds a CodeMirror 6 editor (vendor/codemirror.bundle.js, built by frontend/build.mjs) to a
 * room through collab-client.js in ops mode: local edits become ops, remote ops become
 * CodeMirror changes, and the users list, remote cursors and selections, typing indicator,
 * connection status and autocomplete come from the same connection. Who wrote what (the gutter
 * and the author colours) is authorship-view.js; the history panel is history-panel.js.
 *
 * URLs: `/` shows the start card; `/r/<id>` (or `/?room=<id>`) opens a room. A private room's
 * token rides in the fragment, `/r/<id>#token=...`: browsers never send a fragment, so the token
 * reaches the server only as the WebSocket's `?token=` and as `Authorization: Bearer` on REST
 * calls, never in a page request the server logs.
 *
 * Offsets: CodeMirror and collab-client.js's API both count UTF-16 code units, so changes pass
 * through unconverted; the client converts to code points for the wire. The editor keeps "\n"
 * as its only line separator, so a "\r" in the room's text stays a character and both sides
 * keep the same offsets.
 */
import {
  Annotation,
  Compartment,
  Decoration,
  EditorState,
  EditorView,
  StateEffect,
  StateField,
  Transaction,
  WidgetType,
  autocompletion,
  basicSetup,
  indentUnit,
  indentWithTab,
  keymap,
  python,
  startCompletion,
} from "./vendor/codemirror.bundle.js";
import {authorshipView} from "./authorship-view.js";
import {CollabClient} from "./collab-client.js";
import {HistoryPanel} from "./history-panel.js";

const NAME_KEY = "collabsite.name";
const VIEW_TOKEN_KEY = (roomId) => `collabsite.viewToken.${roomId}`;
// Typing stops showing this long after the last keystroke (the server also expires it, ~5 s).
const TYPING_IDLE_MS = 1500;
// Completions wait this long at most for our latest keystroke to reach the server, which
// completes on its own copy of the text.
const COMPLETE_SETTLE_MS = 400;
// An answer the server marked incomplete (Jedi ran out of time; its full answer is usually
// ready a moment later) or gave for a text without our latest edits is asked for again after
// these delays, as long as the caret and the text stay where they were.
const COMPLETE_RETRY_MS = [150, 300, 600, 1200, 2400];
const IDENTIFIER_BEFORE = /[\p{L}\p{N}_]+$/u;
const IDENTIFIER = /^[\p{L}\p{N}_]*$/u;
const COMPLETION_TYPES = {module: "namespace", text: "text"};
// A view link, or a connection closed for good: the text can be read and copied, not edited.
const READ_ONLY = [EditorState.readOnly.of(true), EditorView.editable.of(false)];

const $ = (id) => document.getElementById(id);
const config = JSON.parse($("page-config").textContent);

// -- small helpers -----------------------------------------------------------------------------

function storedName() {
  const saved = localStorage.getItem(NAME_KEY)?.trim();
  if (saved) return saved.slice(0, 64);
  const adjectives = ["Swift", "Quiet", "Bright", "Clever", "Brave", "Calm", "Keen", "Lucky"];
  const animals = ["Otter", "Falcon", "Panda", "Lynx", "Heron", "Badger", "Koala", "Fox"];
  const pick = (list) => list[Math.floor(Math.random() * list.length)];
  const name = `${pick(adjectives)} ${pick(animals)}`;
  localStorage.setItem(NAME_KEY, name);
  return name;
}

function tokenFromFragment() {
  return new URLSearchParams(location.hash.slice(1)).get("token") || undefined;
}

function roomLink(roomId, token) {
  const link = new URL(`/r/${encodeURIComponent(roomId)}`, location.origin);
  if (token) link.hash = new URLSearchParams({token}).toString();
  return link.href;
}

/**
 * JSON over REST; the token goes in a header, never in the URL. Signed in, the session cookie
 * rides along, so writes carry the CSRF token the page was given. Throws {status, message}.
 */
async function api(path, {method = "GET", body, token} = {}) {
  const headers = {Accept: "application/json"};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  if (config.csrfToken && method !== "GET") headers["X-CSRFToken"] = config.csrfToken;
  let response;
  try {
    response = await fetch(path, {method, headers, body: body && JSON.stringify(body)});
  } catch {
    throw {status: 0, message: "The server cannot be reached. Check your connection."};
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw {status: response.status, message: data.error || response.statusText};
  return data;
}

let toastTimer = null;
function toast(message) {
  const element = $("toast");
  element.textContent = message;
  element.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (element.hidden = true), 2500);
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard API outside secure contexts (plain http on a LAN address): the old way.
    const area = Object.assign(document.createElement("textarea"), {value: text});
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
}

function span(className, text = "") {
  return Object.assign(document.createElement("span"), {className, textContent: text});
}

function badge(text, kind) {
  return span(`badge badge-${kind}`, text);
}

// -- start card --------------------------------------------------------------------------------

function showStart(error) {
  $("start").hidden = false;
  $("workspace").hidden = true;
  const nameInput = $("name-input");
  // Signed in, others see the account's name (the server sets it): no name to choose.
  nameInput.closest("label").hidden = Boolean(config.account);
  nameInput.value = storedName();
  nameInput.onchange = () => {
    const name = nameInput.value.trim().slice(0, 64);
    if (name) localStorage.setItem(NAME_KEY, name);
  };
  if (error) {
    $("start-error").textContent = error;
    $("start-error").hidden = false;
  }
  const create = async (isPrivate, button) => {
    button.disabled = true;
    try {
      const room = await api("/rooms", {method: "POST", body: {private: isPrivate}});
      if (room.view_token) localStorage.setItem(VIEW_TOKEN_KEY(room.room_id), room.view_token);
      location.assign(roomLink(room.room_id, room.token));
    } catch (failure) {
      showStart(`Could not create a room: ${failure.message}`);
      button.disabled = false;
    }
  };
  $("create-room").onclick = (event) => create(false, event.currentTarget);
  $("create-private-room").onclick = (event) => create(true, event.currentTarget);
  $("open-form").onsubmit = (event) => {
    event.preventDefault();
    const target = parseRoomInput($("open-input").value);
    if (target) location.assign(roomLink(target.roomId, target.token));
    else showStart("That is neither a room id nor a room link.");
  };
}

/** A room id, or a link such as https://host/r/<id>#token=... or /?room=<id>. */
function parseRoomInput(value) {
  value = value.trim();
  if (/^[A-Za-z0-9_-]{1,64}$/.test(value)) return {roomId: value};
  let url;
  try {
    url = new URL(value, location.origin);
  } catch {
    return null;
  }
  const roomId =
    url.pathname.match(/^\/r\/([A-Za-z0-9_-]{1,64})\/?$/)?.[1] ?? url.searchParams.get("room");
  if (!roomId || !/^[A-Za-z0-9_-]{1,64}$/.test(roomId)) return null;
  return {roomId, token: new URLSearchParams(url.hash.slice(1)).get("token") || undefined};
}

// -- remote cursors and selections -------------------------------------------------------------

const remoteChange = Annotation.define();
const setPeers = StateEffect.define();

class PeerCaret extends WidgetType {
  constructor(name, color) {
    super();
    this.name = name;
    this.color = color;
  }

  eq(other) {
    return other.name === this.name && other.color === this.color;
  }

  toDOM() {
    const caret = span("cm-peer-caret");
    caret.style.setProperty("--peer-color", this.color);
    caret.style.setProperty("--peer-text", isLight(this.color) ? "#1f2328" : "#ffffff");
    caret.append(span("cm-peer-label", this.name));
    return caret;
  }

  ignoreEvent() {
    return true;
  }
}

/** Whether dark text reads better than white on `color` (#rrggbb; anything else counts as dark). */
function isLight(color) {
  const match = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(color);
  if (!match) return false;
  const [r, g, b] = match.slice(1).map((hex) => parseInt(hex, 16));
  return 0.299 * r + 0.587 * g + 0.114 * b > 160;
}

/** Decorations for [{anchor, head, name, color}] (UTF-16 offsets of the current text). */
function peerDecorations(peers, length) {
  const ranges = [];
  for (const {anchor, head, name, color} of peers) {
    const [from, to] = [Math.min(anchor, head, length), Math.min(Math.max(anchor, head), length)];
    if (from < to) {
      ranges.push(
        Decoration.mark({
          class: "cm-peer-selection",
          attributes: {style: `--peer-color: ${color}`},
        }).range(from, to),
      );
    }
    ranges.push(
      Decoration.widget({widget: new PeerCaret(name, color), side: 1}).range(
        Math.min(head, length),
      ),
    );
  }
  return Decoration.set(ranges, true);
}

const peerField = StateField.define({
  create: () => Decoration.none,
  update(decorations, transaction) {
    decorations = decorations.map(transaction.changes);
    for (const effect of transaction.effects) {
      if (effect.is(setPeers))
        decorations = peerDecorations(effect.value, transaction.newDoc.length);
    }
    return decorations;
  },
  provide: (field) => EditorView.decorations.from(field),
});

// -- the room ----------------------------------------------------------------------------------

function colorOf(user) {
  if (user?.color) return user.color;
  let hash = 0;
  for (const char of user?.id ?? "") hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360} 65% 45%)`;
}

async function openRoom(roomId) {
  if (location.pathname === "/") {
    // `/?room=<id>` becomes the canonical link, keeping the fragment (and its token).
    history.replaceState(null, "", `/r/${encodeURIComponent(roomId)}${location.hash}`);
  }
  const token = tokenFromFragment();
  let room;
  try {
    room = await api(`/rooms/${encodeURIComponent(roomId)}`, {token});
  } catch (failure) {
    const reasons = {
      403: config.account
        ? `You (${config.account.username}) have no access to this room. Ask its owner to invite you, or open the full link they shared.`
        : "This room is private. Open it with the full link its owner shared (it ends in #token=…), or sign in if you were invited.",
      404: `There is no room “${roomId}”. Check the link, or create a new room.`,
    };
    showStart(reasons[failure.status] ?? `Could not open the room: ${failure.message}`);
    return;
  }
  new Room(roomId, room, token);
}

class Room {
  constructor(roomId, info, token) {
    this.roomId = roomId;
    this.token = token;
    this.view = null;
    this.typingUsers = new Set();
    this.unsentEdits = 0; // local edits since the server last confirmed everything
    this.typingTimer = null;
    this.readOnly = new Compartment();
    this.completionRetry = null; // {doc, pos, attempt, timer}: see askAgainLater

    $("workspace").hidden = false;
    $("room-title").hidden = false;
    $("room-id").textContent = info.name || roomId;
    $("room-id").title = roomId;
    if (token) $("room-badges").append(badge("Private", "private"));
    document.title = `${info.name || roomId} — collabsite`;
    this.setupCopyButtons();

    this.doc = new CollabClient({
      url: `/ws/${encodeURIComponent(roomId)}`,
      name: storedName(),
      token,
      authorship: true,
    });
    this.authorship = authorshipView(this.doc);
    this.doc.on("ready", ({text}) => this.onReady(text));
    this.doc.on("change", (event) => this.onRemoteChange(event));
    this.doc.on("status", (status, {pending}) => this.onStatus(status, pending));
    this.doc.on("users", () => {
      this.renderUsers();
      this.showPeers();
    });
    this.doc.on("cursor", () => this.showPeers());
    // "users" follows, and redraws.
    this.doc.on("leave", ({user}) => this.typingUsers.delete(user.id));
    this.doc.on("typing", ({user, typing}) => {
      if (typing) this.typingUsers.add(user);
      else this.typingUsers.delete(user);
      this.renderUsers();
    });
    this.doc.on("error", (error) => this.onError(error));
    this.doc.on("access", ({access}) => this.onAccess(access));
    // The browser knows before the backoff timer does.
    window.addEventListener("online", () => this.doc.reconnect());
    window.addEventListener("beforeunload", (event) => {
      if (this.doc.hasPendingChanges) event.preventDefault();
    });
    this.onStatus(this.doc.status, false);
  }

  setupCopyButtons() {
    if (config.manage) return; // the share dialog (share.js) has the room's links
    const copy = $("copy-link");
    copy.hidden = false;
    copy.onclick = async () => {
      // Read when copying: a new link (share.js) replaces the fragment's token.
      const token = tokenFromFragment();
      await copyText(roomLink(this.roomId, token));
      toast(token ? "Link copied: it carries the room's token, share it with care" : "Link copied");
    };
    if (localStorage.getItem(VIEW_TOKEN_KEY(this.roomId))) {
      const copyView = $("copy-view-link");
      copyView.hidden = false;
      copyView.onclick = async () => {
        await copyText(roomLink(this.roomId, localStorage.getItem(VIEW_TOKEN_KEY(this.roomId))));
        toast("Read-only link copied");
      };
    }
  }

  onReady(text) {
    $("editor").replaceChildren();
    this.view = new EditorView({
      parent: $("editor"),
      state: EditorState.create({
        doc: text,
        extensions: [
          basicSetup,
          python(),
          indentUnit.of("    "),
          keymap.of([indentWithTab]),
          EditorState.lineSeparator.of("\n"),
          autocompletion({override: [(context) => this.completions(context)]}),
          peerField,
          this.authorship.extensions,
          // init says whether this connection may edit, so a view link is read-only from the
          // first frame instead of showing typed text that the server then refuses.
          this.readOnly.of(this.doc.readOnly ? READ_ONLY : []),
          EditorView.updateListener.of((update) => this.onEditorUpdate(update)),
          EditorView.contentAttributes.of({"aria-label": "Code editor"}),
        ],
      }),
    });
    this.view.focus();
    this.authorship.connect(this.view);
    this.setupHistory();
    if (this.doc.readOnly) this.showViewOnly();
    // Our cursor goes out at once, so the others see where we are (and a server that does not
    // say `access` in init refuses a view link here, before any edit is lost).
    this.doc.setCursor(0, 0);
    this.renderUsers();
    this.showPeers();
    this.showPosition();
  }

  /** The history panel and the author colours: two buttons in the top bar. */
  setupHistory() {
    const actions = document.querySelector(".topbar-actions");
    const colors = Object.assign(document.createElement("button"), {
      id: "authors-toggle",
      type: "button",
      className: "button",
      textContent: "Colour by author",
      title: "Show who wrote each part of the text, in the colours of the people list",
    });
    colors.setAttribute("aria-pressed", "false");
    colors.onclick = () => {
      const on = colors.getAttribute("aria-pressed") !== "true";
      colors.setAttribute("aria-pressed", String(on));
      this.authorship.showColors(on);
    };
    const panel = new HistoryPanel({
      doc: this.doc,
      roomId: this.roomId,
      token: this.token,
      pane: $("editor").parentElement,
      live: $("editor"),
      toast,
    });
    const open = Object.assign(document.createElement("button"), {
      id: "history-toggle",
      type: "button",
      className: "button",
      textContent: "History",
      title: "Look at the code at any earlier version, replay it, compare, restore",
    });
    open.onclick = () => (panel.isOpen ? panel.close() : panel.open());
    actions.prepend(open, colors);
  }

  /** Local edits go to the server; remote ones (annotated) came from it. */
  onEditorUpdate(update) {
    for (const transaction of update.transactions) {
      if (!transaction.docChanged || transaction.annotation(remoteChange)) continue;
      this.unsentEdits++;
      // Ascending changes, each applied before the next: fromB is where it starts by then.
      transaction.changes.iterChanges((fromA, toA, fromB, _toB, inserted) => {
        this.doc.applyLocalChange(fromB, fromB + (toA - fromA), inserted.toString());
      });
      this.noteTyping();
    }
    if (update.docChanged || update.selectionSet) {
      const {anchor, head} = update.state.selection.main;
      this.doc.setCursor(anchor, head);
      this.showPosition();
    }
    if (update.docChanged) this.onStatus(this.doc.status, this.doc.hasPendingChanges);
  }

  onRemoteChange({changes}) {
    if (!this.view) return;
    this.view.dispatch({
      changes,
      effects: setPeers.of(this.peers()),
      annotations: [remoteChange.of(true), Transaction.addToHistory.of(false)],
    });
  }

  noteTyping() {
    this.doc.setTyping(true);
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => this.doc.setTyping(false), TYPING_IDLE_MS);
  }

  peers() {
    const users = new Map(this.doc.users.map((user) => [user.id, user]));
    return this.doc.cursors
      .filter(({user}) => users.has(user))
      .map(({user, anchor, head}) => ({
        anchor,
        head,
        name: users.get(user).name,
        color: colorOf(users.get(user)),
      }));
  }

  showPeers() {
    this.view?.dispatch({effects: setPeers.of(this.peers())});
  }

  // -- connection --------------------------------------------------------------------------

  onStatus(status, pending) {
    if (!pending) this.unsentEdits = 0;
    const unsent = this.unsentEdits;
    const edits = `${unsent} unsent edit${unsent === 1 ? "" : "s"}`;
    const labels = {
      connecting: "Connecting…",
      connected: "Connected",
      reconnecting: pending ? `Reconnecting · ${edits}` : "Reconnecting…",
      offline: pending ? `Offline · ${edits}` : "Offline",
      closed: "Disconnected",
    };
    const element = $("status");
    element.hidden = false;
    element.dataset.status = status;
    element.dataset.pending = String(pending ? unsent : 0);
    $("status-text").textContent = labels[status] ?? status;
    const loaded = this.doc.version !== null;
    if (loaded) $("version").textContent = `v${this.doc.version}`;
    $("save-state").textContent = !loaded
      ? ""
      : !pending
        ? "All changes saved"
        : status === "connected"
          ? "Saving…"
          : "Edits kept locally; they are sent when the connection is back";
    if (status !== "connected") {
      this.typingUsers.clear();
      if (this.view) this.renderUsers();
    }
  }

  onError({code, message, closeCode}) {
    if (closeCode) {
      // Final closes (4400, 4403, 4404): the client will not reconnect.
      const reasons = {
        not_found: "This room no longer exists.",
        forbidden: "You no longer have access to this room.",
      };
      this.fail(reasons[code] ?? `The server closed the connection: ${message}.`);
    } else if (code === "forbidden") {
      this.view?.dispatch({effects: this.readOnly.reconfigure(READ_ONLY)});
      this.showViewOnly();
    } else if (code === "too_large" || code === "bad_op") {
      toast(`The server refused an edit: ${message}`);
    }
    // "protocol" (the client resynchronised by itself) and "rate_limited" need nothing here.
  }

  /** An owner changed what we may do, while we are connected. */
  onAccess(access) {
    const readOnly = access === "view";
    this.view?.dispatch({effects: this.readOnly.reconfigure(readOnly ? READ_ONLY : [])});
    if (readOnly) {
      this.showViewOnly();
      toast("You can only view this room now");
    } else {
      $("room-badges").querySelector(".badge-readonly")?.remove();
      toast("You can edit this room now");
    }
  }

  showViewOnly() {
    if ($("room-badges").querySelector(".badge-readonly")) return;
    const indicator = badge("View only", "readonly");
    indicator.title = "This link lets you read and copy the code, not edit it";
    $("room-badges").append(indicator);
  }

  fail(message) {
    const element = $("status");
    element.dataset.status = "closed";
    $("status-text").textContent = "Disconnected";
    this.view?.dispatch({effects: this.readOnly.reconfigure(READ_ONLY)});
    toast(message);
  }

  // -- sidebar and status bar --------------------------------------------------------------

  renderUsers() {
    const users = [...this.doc.users].sort((a, b) =>
      a.id === this.doc.userId ? -1 : b.id === this.doc.userId ? 1 : 0,
    );
    $("user-count").textContent = String(users.length);
    $("users").replaceChildren(
      ...users.map((user) => {
        const item = document.createElement("li");
        item.className = "user";
        item.dataset.user = user.id;
        const avatar = span("avatar", [...user.name.trim()][0]?.toUpperCase() ?? "?");
        avatar.style.background = colorOf(user);
        item.append(avatar, span("user-name", user.name));
        if (user.id === this.doc.userId) item.append(badge("you", "you"));
        if (this.typingUsers.has(user.id)) item.append(span("typing-dots"));
        return item;
      }),
    );
    const typing = users.filter((user) => this.typingUsers.has(user.id)).map((user) => user.name);
    $("typing").textContent =
      typing.length === 0
        ? ""
        : typing.length === 1
          ? `${typing[0]} is typing…`
          : `${typing.join(", ")} are typing…`;
  }

  showPosition() {
    const head = this.view.state.selection.main.head;
    const line = this.view.state.doc.lineAt(head);
    $("position").textContent = `Ln ${line.number}, Col ${head - line.from + 1}`;
  }

  // -- autocomplete ------------------------------------------------------------------------

  /**
   * CodeMirror completion source: the server's completions over the room's WebSocket. Only an
   * answer for the text and position the editor still shows is used; an incomplete one is shown
   * for what it is worth and asked for again (askAgainLater).
   */
  async completions(context) {
    const word = context.matchBefore(IDENTIFIER_BEFORE);
    const afterDot = context.state.sliceDoc(context.pos - 1, context.pos) === ".";
    if (!word && !afterDot && !context.explicit) return null;
    if (this.doc.status !== "connected") return null;
    await this.settled(COMPLETE_SETTLE_MS);
    // The text moved on meanwhile: CodeMirror asks again for the new one.
    const moved = () => context.aborted || this.view.state.doc !== context.state.doc;
    if (moved()) return null;
    const before = this.doc.text.slice(0, context.pos).split(/\r\n|\r|\n/);
    let answer;
    try {
      answer = await this.doc.completions(before.length, before[before.length - 1].length);
    } catch {
      return null;
    }
    if (moved()) return null;
    const {items, incomplete, stale} = answer;
    if (incomplete || stale) this.askAgainLater(context.state.doc, context.pos);
    else this.stopAskingAgain();
    // Items computed on another text may not even fit this position.
    if (stale) return null;
    return {
      from: word ? word.from : context.pos,
      // An incomplete list is not narrowed down as the user types on: each key asks again.
      validFor: incomplete ? undefined : IDENTIFIER,
      options: items.map((item, rank) => ({
        label: item.label,
        apply: item.insert_text || item.label,
        type: COMPLETION_TYPES[item.kind] ?? item.kind,
        detail: item.detail,
        boost: 50 - Math.min(rank, 100), // keep the server's ranking among equal matches
      })),
    };
  }

  /**
   * Ask for completions at `pos` of `doc` again after the next delay of COMPLETE_RETRY_MS, if
   * the editor still shows that text with the caret there; give up after the last delay.
   */
  askAgainLater(doc, pos) {
    const previous = this.completionRetry;
    const attempt = previous?.doc === doc && previous.pos === pos ? previous.attempt + 1 : 0;
    this.stopAskingAgain();
    if (attempt >= COMPLETE_RETRY_MS.length) return;
    const timer = setTimeout(() => {
      const {state} = this.view;
      const {main} = state.selection;
      if (state.doc === doc && main.empty && main.head === pos) startCompletion(this.view);
    }, COMPLETE_RETRY_MS[attempt]);
    this.completionRetry = {doc, pos, attempt, timer};
  }

  stopAskingAgain() {
    clearTimeout(this.completionRetry?.timer);
    this.completionRetry = null;
  }

  /** Resolves once the server has every local edit, or after `ms`. */
  settled(ms) {
    if (!this.doc.hasPendingChanges) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        stop();
        resolve();
      };
      const timer = setTimeout(done, ms);
      const stop = this.doc.on("status", (_status, {pending}) => pending || done());
    });
  }
}

// -- start -------------------------------------------------------------------------------------

// The script runs: editor.html's static fallback note ("the scripts have not started") goes.
$("boot").remove();
if (config.badRoomId)
  showStart("That room link is malformed: a room id is 1-64 letters, digits, “_” or “-”.");
else if (config.roomId) openRoom(config.roomId);
else showStart();
