// The collaborative editor demo (editor.html, served at /demo/editor/{doc}): CodeMirror 6 bound
// to the document's Y.Text "content" through TandemYjsProvider, with remote cursors, who is here
// and who is typing, all from awareness. Libraries: /static/editor/tandem-editor.js.
(function () {
  "use strict";

  const E = window.TandemEditor;
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const config = JSON.parse($("demo-config").textContent || "{}");
  const sessionUrl = config.sessionUrl || "/demo/editor/session";
  const docId = decodeURIComponent(location.pathname.replace(/\/+$/, "").split("/").pop());
  const viewer = params.get("view") === "1";
  const TYPING_IDLE_MS = 2000;
  const NAME_KEY = "tandem-editor-name";
  // #sync-status for each provider status (anything else, e.g. while joining: "connecting").
  const STATUS = { synced: "synced", disconnected: "offline", closed: "closed", failed: "failed" };

  let name = (params.get("name") || stored(NAME_KEY) || randomName()).trim().slice(0, 40);
  let session = null; // {token, expires_at, user: {id, name, color, colorLight}, doc}
  let connection = "connecting"; // as tandem.js reports it
  let client = null;
  let provider = null;
  let view = null;
  let undoManager = null;
  let watched = null; // the awareness the presence list listens to (a reset brings a new one)
  let typingTimer = null;
  const readOnly = new E.Compartment();

  // For the browser tests (and the curious): always the current objects.
  window.editorApp = {
    get provider() { return provider; },
    get ydoc() { return provider && provider.doc; },
    get awareness() { return provider && provider.awareness; },
    get view() { return view; },
    get client() { return client; },
    get session() { return session; },
  };

  // Remote carets always show their names (y-codemirror.next shows them on hover only).
  const theme = E.EditorView.theme({
    ".cm-ySelectionInfo": { opacity: 1, fontFamily: "inherit", borderRadius: "3px 3px 3px 0" },
    ".cm-ySelectionCaretDot": { display: "none" },
  });

  // typing: true in awareness on keystrokes that edit, false after TYPING_IDLE_MS without one.
  const typingListener = E.EditorView.updateListener.of((update) => {
    const edits = (tr) => tr.isUserEvent("input") || tr.isUserEvent("delete");
    if (!update.transactions.some(edits)) return;
    setTyping(true);
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => setTyping(false), TYPING_IDLE_MS);
  });

  $("doc-id").textContent = docId;
  $("name").value = name;
  $("name").addEventListener("change", rename);
  if (!/^[A-Za-z0-9][A-Za-z0-9_.@=+-]{0,127}$/.test(docId)) {
    return fail("Open this page at /demo/editor/<document id>, e.g. /demo/editor/notes-1.");
  }
  start().catch((error) => fail(`Could not open the document: ${error.message}`));

  async function start() {
    // The session first: the join that follows the connect carries our user in awareness.
    session = await fetchSession();
    client = Tandem.connect("", {
      token,
      onConnection: (state, detail) => {
        connection = state;
        // tandem.js gave up (e.g. the server refused the session): reloading is the way back.
        if (state === "closed" && detail) fail(`Disconnected: ${detail.message || detail.code}`);
        render();
      },
      onError: (error) => console.warn("tandem:", error.code, error.message),
    });
    provider = new E.TandemYjsProvider(client.socket, docId, new E.Y.Doc(), {
      onStatus: render,
      onReset: mount, // the document moved to a new epoch: a new Y.Doc to bind to
      onError: providerError,
      onClosed: closed,
    });
    const { id, color, colorLight } = session.user;
    name = session.user.name || name; // as the server has it
    $("name").value = name;
    provider.awareness.setLocalState({
      user: { id, name, color, colorLight },
      cursor: null,
      typing: false,
    });
    mount();
  }

  async function fetchSession() {
    const body = viewer ? { doc: docId, name, viewer: true } : { doc: docId, name };
    const response = await fetch(sessionUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error ? data.error.message : response.statusText);
    return data;
  }

  // tandem.js asks on every (re)connect: a fresh session shortly before this one expires.
  async function token() {
    if (session.expires_at - Date.now() / 1000 < 60) session = await fetchSession();
    return session.token;
  }

  // (Re)build the editor on provider.doc: at start and after a reset replaced the doc.
  function mount() {
    if (view) view.destroy();
    if (undoManager) undoManager.destroy();
    const ytext = provider.doc.getText("content");
    undoManager = new E.Y.UndoManager(ytext);
    view = new E.EditorView({
      parent: $("editor"),
      state: E.EditorState.create({
        doc: ytext.toString(),
        extensions: [
          E.keymap.of(E.yUndoManagerKeymap), // before basicSetup: undo goes through Yjs
          E.basicSetup,
          language(),
          E.EditorView.lineWrapping,
          theme,
          readOnly.of(E.EditorState.readOnly.of(isReadOnly())),
          typingListener,
          E.yCollab(ytext, provider.awareness, { undoManager }),
        ],
      }),
    });
    if (watched !== provider.awareness) {
      if (watched) watched.off("change", renderPresence);
      watched = provider.awareness;
      watched.on("change", renderPresence);
    }
    render();
    renderPresence();
  }

  function language() {
    return /\.(m?js|jsx|ts|tsx)$/.test(docId)
      ? E.javascript({ typescript: /\.tsx?$/.test(docId), jsx: /x$/.test(docId) })
      : E.markdown();
  }

  function setTyping(typing) {
    const state = provider.awareness.getLocalState();
    if (state && state.typing !== typing) provider.awareness.setLocalStateField("typing", typing);
  }

  function rename() {
    name = $("name").value.trim().slice(0, 40) || name;
    $("name").value = name;
    store(NAME_KEY, name);
    const state = provider && provider.awareness.getLocalState();
    if (state) provider.awareness.setLocalStateField("user", { ...state.user, name });
  }

  function isReadOnly() {
    return viewer || Boolean(provider && provider.readOnly) || !$("error-banner").hidden;
  }

  function render() {
    if (!provider) return;
    const status = STATUS[provider.status] || "connecting";
    const line = $("sync-status");
    line.textContent = status;
    line.dataset.status = status;
    const lost = connection === "reconnecting" || connection === "offline";
    $("connection-banner").hidden = !(status === "offline" || (status === "connecting" && lost));
    if (provider.role) $("role").textContent = provider.role;
    $("role").dataset.role = provider.role || "";
    $("readonly-banner").hidden = !(viewer || provider.readOnly) || !$("error-banner").hidden;
    if (view) {
      const locked = isReadOnly();
      if (view.state.readOnly !== locked) {
        view.dispatch({ effects: readOnly.reconfigure(E.EditorState.readOnly.of(locked)) });
      }
    }
  }

  function providerError(error) {
    console.warn("editor:", error.event, error.code, error.message);
    if (error.event === "doc.join" && !error.retryable) {
      fail(`Could not join the document: ${error.message}`);
    }
    render(); // permission_denied on an update makes the provider read-only
  }

  function closed({ code }) {
    const gone = code === "not_found";
    fail(gone ? "This document was deleted." : "Your access to this document was revoked.");
  }

  function fail(message) {
    const banner = $("error-banner");
    banner.textContent = message;
    banner.hidden = false;
    render();
  }

  function renderPresence() {
    const awareness = provider.awareness;
    const me = awareness.clientID;
    const people = [...awareness.getStates()]
      .filter(([, state]) => state && state.user)
      .sort(([a, x], [b, y]) => (a === me ? -1 : b === me ? 1 : byName(x.user, y.user)));
    $("presence").replaceChildren(...people.map(([id, state]) => member(id, state, id === me)));
    $("presence-count").textContent = people.length;
  }

  function byName(a, b) {
    return String(a.name || "").localeCompare(String(b.name || ""));
  }

  function member(id, { user, typing }, self) {
    const name = String(user.name || "Anonymous"); // another client's state: anything goes
    const item = document.createElement("li");
    item.dataset.clientId = id;
    item.dataset.name = name;
    item.dataset.typing = typing ? "true" : "false";
    if (self) item.classList.add("me");
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.style.backgroundColor = user.color || "#8c97ab"; // the style setter drops bad values
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = self ? `${name} (you)` : name;
    const note = document.createElement("span");
    note.className = "typing";
    note.textContent = "typing…";
    note.hidden = !typing;
    item.append(dot, label, note);
    return item;
  }

  function randomName() {
    const adjectives = ["Amber", "Brisk", "Calm", "Dapper", "Eager", "Fuzzy", "Gentle", "Jolly"];
    const animals = ["Otter", "Heron", "Lynx", "Panda", "Quokka", "Robin", "Walrus", "Yak"];
    const pick = (list) => list[Math.floor(Math.random() * list.length)];
    return `${pick(adjectives)} ${pick(animals)}`;
  }

  function stored(key) {
    try {
      return localStorage.getItem(key);
    } catch (_) {
      return null; // storage disabled
    }
  }

  function store(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch (_) {
      // storage disabled: the name lasts for this page only
    }
  }
})();
