/**
 * authorship-view.js — who wrote what, in the editor page's CodeMirror view: a gutter with who
 * last touched each line, and (when turned on) the text coloured by its authors, in the colours
 * the people list shows.
 *
 * The data is collab-client.js's `doc.authorship` (loaded once per connection, then kept up to
 * date from the ops; docs/protocol.md, "History"), read again on the next animation frame after
 * anything moved it: one redraw per frame however many changes arrive.
 */
import {
  Compartment,
  Decoration,
  EditorView,
  GutterMarker,
  StateEffect,
  StateField,
  gutter,
} from "./vendor/codemirror.bundle.js";

// Behind text, light enough to read through: the author's colour at about 20% opacity.
const TINT_ALPHA = "33";
const setAuthorship = StateEffect.define();

/** {runs, lines, authors, me} as the view last drew it (null: not loaded yet). */
const authorshipField = StateField.define({
  create: () => null,
  update(value, transaction) {
    for (const effect of transaction.effects) if (effect.is(setAuthorship)) return effect.value;
    return value;
  },
});

function colorOf(authors, author) {
  return authors.get(author)?.color ?? "#8c959f";
}

/** Text marks: each author's runs on their colour. */
const authorMarks = EditorView.decorations.compute([authorshipField], (state) => {
  const data = state.field(authorshipField);
  if (!data) return Decoration.none;
  const length = state.doc.length;
  const marks = [];
  for (const {from, to, author} of data.runs) {
    if (from >= length) break;
    marks.push(
      Decoration.mark({
        class: "cm-author",
        attributes: {
          style: `background-color: ${colorOf(data.authors, author)}${TINT_ALPHA}`,
          "data-author": author,
        },
      }).range(from, Math.min(to, length)),
    );
  }
  return Decoration.set(marks);
});

class LastTouched extends GutterMarker {
  constructor(label, color, title) {
    super();
    this.label = label;
    this.color = color;
    this.title = title;
  }

  eq(other) {
    return other.label === this.label && other.color === this.color && other.title === this.title;
  }

  toDOM() {
    const element = document.createElement("span");
    element.className = "cm-blame-marker";
    element.textContent = this.label;
    element.title = this.title;
    element.style.setProperty("--author-color", this.color);
    return element;
  }
}

function when(ts) {
  return ts ? new Date(ts).toLocaleString() : "";
}

/** The gutter: per line, the person whose change last touched it. */
const lastTouchedGutter = gutter({
  class: "cm-blame-gutter",
  lineMarker(view, block) {
    const data = view.state.field(authorshipField);
    if (!data) return null;
    const record = data.lines[view.state.doc.lineAt(block.from).number - 1];
    if (!record?.author) return null; // the room's initial text: nobody
    const author = data.authors.get(record.author);
    const name = record.author === data.me ? "you" : (author?.name ?? record.author.slice(0, 8));
    const title =
      record.version === null
        ? `${name} · not saved yet`
        : `${author?.name ?? record.author} · version ${record.version} · ${when(record.ts)}`;
    return new LastTouched(name, colorOf(data.authors, record.author), title);
  },
  lineMarkerChange: (update) =>
    update.startState.field(authorshipField) !== update.state.field(authorshipField),
  initialSpacer: () => new LastTouched("Wwwwwwwwww", "transparent", ""),
});

/**
 * The extensions of one editor bound to `doc` (a CollabClient made with `authorship: true`), and
 * `showColors(view, on)` to turn the text colours on and off. Call `connect(view)` once the view
 * exists: it redraws whenever the authorship, the people or the text change.
 */
export function authorshipView(doc) {
  const colors = new Compartment();
  let frame = null;
  let view = null;

  const redraw = () => {
    frame = null;
    const current = doc.authorship;
    if (!view || !current) return;
    // The editor shows the client's text (every change goes through both at once); should it
    // not, the change that brings them together redraws again.
    if (view.state.doc.length !== doc.text.length) return;
    view.dispatch({effects: setAuthorship.of({...current, me: doc.clientId})});
  };
  const schedule = () => {
    if (frame === null) frame = requestAnimationFrame(redraw);
  };

  return {
    extensions: [
      authorshipField,
      lastTouchedGutter,
      colors.of([]),
      EditorView.updateListener.of((update) => update.docChanged && schedule()),
    ],
    connect(editorView) {
      view = editorView;
      doc.on("authorship", schedule);
      doc.on("users", schedule);
      schedule();
    },
    showColors(on) {
      view?.dispatch({effects: colors.reconfigure(on ? authorMarks : [])});
    },
  };
}
