// Entry of server/static/tandem-yjs.js (window.TandemYjs): the provider with the yjs and
// y-protocols/awareness it was built with. Bind editors to this Y: a second copy of yjs on a
// page breaks Yjs (instanceof checks fail), so do not load tandem-editor.js on the same page.
import * as Y from "yjs";
import * as awarenessProtocol from "y-protocols/awareness";
import { TandemYjsProvider } from "./provider.js";

export { TandemYjsProvider, Y, awarenessProtocol };
