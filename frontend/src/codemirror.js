// The entry of rooms/static/rooms/vendor/codemirror.bundle.js: the parts of CodeMirror 6 that
// rooms/static/rooms/editor.js uses, bundled into one ES module (see build.mjs). Add an export
// here when editor.js needs more, then rebuild.
export {
  Annotation,
  Compartment,
  EditorState,
  StateEffect,
  StateField,
  Transaction,
} from "@codemirror/state";
export {Decoration, EditorView, GutterMarker, gutter, keymap, WidgetType} from "@codemirror/view";
export {autocompletion, startCompletion} from "@codemirror/autocomplete";
export {indentWithTab} from "@codemirror/commands";
export {indentUnit} from "@codemirror/language";
export {python} from "@codemirror/lang-python";
export {basicSetup} from "codemirror";
