// Entry of server/static/editor/tandem-editor.js (window.TandemEditor): everything the demo
// editor page (server/static/editor/page.js) needs, with one copy of yjs shared by all of it.
import * as Y from "yjs";
import * as awarenessProtocol from "y-protocols/awareness";
import { basicSetup } from "codemirror";
import { Compartment, EditorState } from "@codemirror/state";
import { EditorView, keymap } from "@codemirror/view";
import { markdown } from "@codemirror/lang-markdown";
import { javascript } from "@codemirror/lang-javascript";
import { yCollab, ySyncAnnotation, yUndoManagerKeymap } from "y-codemirror.next";
import { TandemYjsProvider } from "./provider.js";

export {
  Y,
  awarenessProtocol,
  TandemYjsProvider,
  basicSetup,
  Compartment,
  EditorState,
  EditorView,
  keymap,
  markdown,
  javascript,
  yCollab,
  ySyncAnnotation,
  yUndoManagerKeymap,
};
