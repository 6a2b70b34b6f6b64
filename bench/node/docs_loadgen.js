// Collaborative-documents load generator for bench/ (driven by bench/docs.py).
// Usage: node docs_loadgen.js HARD_TIMEOUT_SECONDS
//
// One process holds many editors: each one a Yjs document (yjs 13.6) with its awareness, on a
// connection of its own, speaking either
// - "tandem": Tandem's contract over socket.io-client (doc.join / doc.update / doc.awareness,
//   each with an ack; every local update is sent at once, no batching), or
// - "hocuspocus": @hocuspocus/provider (y-protocols sync and awareness over `ws`).
// Editors type single characters at random positions of the Y.Text 'content' and, every few
// keystrokes, move their awareness cursor (a Y.RelativePosition, as y-codemirror.next does).
//
// Latency without touching the document's content: a sender notes the send time of each of
// its updates by Yjs id (its clientID and the clock of the inserted character); a receiver
// notes (client, clock, time) of every remote update it integrates (Y.parseUpdateMeta on the
// update its Y.Doc emits). After a step, bench/docs.py gathers every worker's send times and
// hands them to every worker, which then joins them with its receipts (all workers run on the
// same machine: performance.timeOrigin + performance.now() is one clock). Latencies go into a
// log histogram (1 %-wide buckets of microseconds) like bench/node/loadgen.js.
//
// Commands arrive as JSON lines on stdin, replies leave as JSON lines on stdout. The process
// always ends by itself: on stdin EOF, on {"cmd": "exit"}, or at the hard timeout (exit 3).
"use strict";
const readline = require("readline");
const Y = require("yjs");
const awarenessProtocol = require("y-protocols/awareness");
const { io } = require("socket.io-client");
const WebSocket = require("ws");
const { HocuspocusProvider, HocuspocusProviderWebsocket } = require("@hocuspocus/provider");

const hardTimeoutS = Number(process.argv[2] || 600);
setTimeout(() => {
  process.stderr.write(`docs_loadgen ${process.pid}: hard timeout after ${hardTimeoutS}s\n`);
  process.exit(3);
}, hardTimeoutS * 1000).unref();

const LOG_K = 1 / Math.log(1.01);
const REMOTE = "tandem-bench-remote"; // transaction origin of what a Tandem editor receives
const LETTERS = "abcdefghijklmnopqrstuvwxyz";
const COLORS = ["#30bced", "#6eeb83", "#ffbc42", "#ecd444", "#ee6352", "#9ac2c9", "#8acb88"];
const now = () => performance.timeOrigin + performance.now();
const reply = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const bytes = (data) => (data instanceof Uint8Array ? data : new Uint8Array(data || []));

const editors = []; // in connection order; `index` is the global editor number
let closing = false;
let dropped = 0; // connections closed by anything but us
const errors = {}; // error code -> count (requests refused, sends that failed)
const countError = (code) => (errors[code] = (errors[code] || 0) + 1);

// -- receipts ------------------------------------------------------------------------------

let recording = false;
let rn = 0;
let rClient = new Float64Array(1 << 16);
let rClock = new Float64Array(1 << 16);
let rTime = new Float64Array(1 << 16);

function grow() {
  const size = rClient.length * 2;
  for (const name of ["rClient", "rClock", "rTime"]) {
    const old = { rClient, rClock, rTime }[name];
    const next = new Float64Array(size);
    next.set(old);
    if (name === "rClient") rClient = next;
    else if (name === "rClock") rClock = next;
    else rTime = next;
  }
}

// A remote update was integrated into an editor's Y.Doc: note each of its characters' ids.
function received(update) {
  if (!recording) return;
  const t = now();
  const { from, to } = Y.parseUpdateMeta(update);
  for (const [client, first] of from) {
    const end = to.get(client);
    for (let clock = first; clock < end; clock++) {
      if (rn === rClient.length) grow();
      rClient[rn] = client;
      rClock[rn] = clock;
      rTime[rn] = t;
      rn++;
    }
  }
}

// -- editors -------------------------------------------------------------------------------

function newEditor(index, spec) {
  return {
    index,
    mode: spec.mode,
    url: spec.urls[index % spec.urls.length],
    socket: null, // tandem: the socket.io-client Socket
    ws: null, // hocuspocus: the HocuspocusProviderWebsocket
    provider: null,
    docName: null,
    doc: null,
    text: null,
    awareness: null,
    keystrokes: 0,
    firstClock: -1, // of this step's first keystroke
    times: [], // send times of this step's keystrokes, by clock - firstClock
  };
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timeout after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function connectTandem(editor, spec) {
  const socket = io(editor.url, {
    transports: ["websocket"],
    forceNew: true,
    reconnection: false,
    timeout: 30000,
    auth: { token: spec.token },
    perMessageDeflate: false,
  });
  editor.socket = socket;
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", () => {
        socket.on("disconnect", () => {
          if (!closing) dropped++;
        });
        resolve();
      });
      socket.once("connect_error", reject);
    }),
    30000,
    "connect",
  );
}

function connectHocuspocus(editor) {
  const ws = new HocuspocusProviderWebsocket({
    url: editor.url.replace(/^http/, "ws"),
    WebSocketPolyfill: WebSocket,
    maxAttempts: 1,
    // Its default (30 s without a message: reconnect) would cycle idle connections.
    messageReconnectTimeout: 3600 * 1000,
  });
  editor.ws = ws;
  return withTimeout(
    new Promise((resolve) => {
      // "open", not "connect": that one waits for the first message, which an idle
      // connection (no document attached yet) never gets.
      ws.on("open", () => {
        ws.on("disconnect", () => {
          if (!closing) dropped++;
        });
        resolve();
      });
    }),
    30000,
    "connect",
  );
}

function localState(editor) {
  return {
    user: {
      id: `bench-${editor.index}`,
      name: `Editor ${editor.index}`,
      color: COLORS[editor.index % COLORS.length],
      colorLight: COLORS[editor.index % COLORS.length] + "33",
    },
    cursor: null,
    typing: false,
  };
}

async function joinTandem(editor, spec) {
  const { socket, docName } = editor;
  const doc = new Y.Doc();
  const awareness = new awarenessProtocol.Awareness(doc);
  awareness.setLocalState(localState(editor));
  Object.assign(editor, { doc, awareness, text: doc.getText("content") });
  const inbox = [];
  let joined = false;
  socket.on("doc.update", (message) => {
    if (message.doc !== docName) return;
    if (joined) Y.applyUpdate(doc, bytes(message.update), REMOTE);
    else inbox.push(message);
  });
  socket.on("doc.awareness", (message) => {
    if (message.doc === docName) {
      awarenessProtocol.applyAwarenessUpdate(awareness, bytes(message.update), REMOTE);
    }
  });
  const ack = await socket.timeout(30000).emitWithAck("doc.join", {
    doc: docName,
    sv: Y.encodeStateVector(doc),
    awareness: awarenessProtocol.encodeAwarenessUpdate(awareness, [doc.clientID]),
  });
  if (!ack || !ack.ok) throw new Error(`doc.join refused: ${JSON.stringify(ack && ack.error)}`);
  Y.applyUpdate(doc, bytes(ack.update), REMOTE);
  if (ack.awareness) {
    awarenessProtocol.applyAwarenessUpdate(awareness, bytes(ack.awareness), REMOTE);
  }
  joined = true;
  for (const message of inbox) Y.applyUpdate(doc, bytes(message.update), REMOTE);
  doc.on("update", (update, origin) => {
    if (origin === REMOTE) {
      received(update);
      return;
    }
    // A local keystroke: out at once (the browser provider batches 20 ms windows).
    socket.timeout(10000).emit("doc.update", { doc: docName, update }, (err, answer) => {
      if (err) countError("timeout");
      else if (!answer || !answer.ok) countError((answer && answer.error && answer.error.code) || "refused");
    });
  });
  awareness.on("update", ({ added, updated, removed }, origin) => {
    if (origin !== "local") return;
    const update = awarenessProtocol.encodeAwarenessUpdate(awareness, [doc.clientID]);
    socket.timeout(10000).emit("doc.awareness", { doc: docName, update }, (err, answer) => {
      if (err) countError("awareness timeout");
      else if (!answer || !answer.ok) countError("awareness " + ((answer && answer.error && answer.error.code) || "refused"));
    });
  });
}

async function joinHocuspocus(editor, spec) {
  const doc = new Y.Doc();
  const synced = new Promise((resolve, reject) => {
    const provider = new HocuspocusProvider({
      websocketProvider: editor.ws,
      name: editor.docName,
      document: doc,
      token: spec.token || "bench",
      onSynced: () => resolve(),
      onAuthenticationFailed: ({ reason }) => reject(new Error(`authentication failed: ${reason}`)),
    });
    editor.provider = provider;
    provider.attach();
  });
  const { provider } = editor;
  Object.assign(editor, { doc, awareness: provider.awareness, text: doc.getText("content") });
  provider.setAwarenessField("user", localState(editor).user);
  provider.setAwarenessField("cursor", null);
  provider.setAwarenessField("typing", false);
  await withTimeout(synced, 30000, "sync");
  doc.on("update", (update, origin) => {
    if (origin === provider) received(update);
  });
}

// Runs `work` over items with at most `concurrency` in flight; collects error messages.
async function pool(items, concurrency, work) {
  const failures = {};
  let next = 0;
  let ok = 0;
  async function lane() {
    while (next < items.length) {
      const item = items[next++];
      try {
        await work(item);
        ok++;
      } catch (err) {
        const message = String((err && err.message) || err);
        failures[message] = (failures[message] || 0) + 1;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane));
  return { ok, errors: failures };
}

// {mode, urls, token, start, count, concurrency}: open `count` connections (editors start..).
async function connect(cmd) {
  const fresh = [];
  for (let i = 0; i < cmd.count; i++) fresh.push(newEditor(cmd.start + i, cmd));
  const began = now();
  const result = await pool(fresh, cmd.concurrency || 50, async (editor) => {
    if (editor.mode === "tandem") await connectTandem(editor, cmd);
    else await connectHocuspocus(editor, cmd);
    editors.push(editor);
  });
  reply({ ev: "connected", ...result, seconds: (now() - began) / 1000 });
}

// {prefix, perDoc, token, concurrency}: editor i joins document prefix + floor(i / perDoc);
// or {doc, ...}: every editor not in a document yet joins `doc`.
async function join(cmd) {
  const began = now();
  const pending = editors.filter((e) => e.docName === null);
  for (const editor of pending) {
    editor.docName = cmd.doc || cmd.prefix + Math.floor(editor.index / cmd.perDoc);
  }
  const result = await pool(pending, cmd.concurrency || 50, async (editor) => {
    if (editor.mode === "tandem") await joinTandem(editor, cmd);
    else await joinHocuspocus(editor, cmd);
  });
  reply({ ev: "joined", ...result, seconds: (now() - began) / 1000 });
}

function keystroke(editor, awarenessEvery) {
  const { doc, text } = editor;
  const pos = Math.floor(Math.random() * (text.length + 1));
  const clock = Y.getState(doc.store, doc.clientID);
  if (editor.firstClock < 0) editor.firstClock = clock;
  const slot = clock - editor.firstClock;
  editor.times[slot] = now();
  text.insert(pos, LETTERS[Math.floor(Math.random() * LETTERS.length)]);
  editor.keystrokes++;
  if (awarenessEvery > 0 && editor.keystrokes % awarenessEvery === 0) {
    // The caret right after the typed character, as a relative position on that character
    // (what createRelativePositionFromTypeIndex(text, pos + 1, -1) gives, without its walk
    // from the start of the text).
    const at = Y.relativePositionToJSON(
      new Y.RelativePosition(null, "content", Y.createID(doc.clientID, clock), -1),
    );
    if (editor.provider) editor.provider.setAwarenessField("cursor", { anchor: at, head: at });
    else editor.awareness.setLocalStateField("cursor", { anchor: at, head: at });
  }
}

// {rate (per editor, /s), duration (s), count? (per editor), awarenessEvery, step}: every editor
// types `rate` characters a second (at a random phase) until `duration` or `count` is reached.
async function type(cmd) {
  rn = 0;
  recording = true;
  const typing = editors.filter((e) => e.doc !== null);
  for (const editor of typing) {
    editor.firstClock = -1;
    editor.times = [];
  }
  const interval = 1000 / cmd.rate;
  const limit = cmd.count || Infinity;
  const began = now();
  const until = began + cmd.duration * 1000;
  let sent = 0;
  await Promise.all(
    typing.map(async (editor) => {
      // Each editor keeps its own schedule (open loop: a late tick does not delay the next).
      let due = began + Math.random() * interval;
      let typed = 0;
      while (due < until && typed < limit && !closing) {
        const wait = due - now();
        if (wait > 0) await sleep(wait);
        keystroke(editor, cmd.awarenessEvery || 0);
        typed++;
        sent++;
        due += interval;
      }
    }),
  );
  reply({ ev: "typed", sent, seconds: (now() - began) / 1000, first: began, errors: { ...errors } });
}

// This step's send times, by Yjs client id.
function sends() {
  const out = {};
  for (const editor of editors) {
    if (editor.times.length) out[editor.doc.clientID] = [editor.firstClock, editor.times];
  }
  reply({ ev: "sends", sends: out });
}

// {sends: {client: [firstClock, times]}}: this step's receipts joined with every send time.
function latency(cmd) {
  recording = false;
  const table = new Map();
  for (const [client, [first, times]] of Object.entries(cmd.sends)) {
    table.set(Number(client), { first, times });
  }
  const hist = new Map();
  let matched = 0;
  let unmatched = 0;
  let maxUs = 0;
  let firstAt = Infinity;
  let lastAt = 0;
  for (let i = 0; i < rn; i++) {
    const sender = table.get(rClient[i]);
    const slot = sender === undefined ? -1 : rClock[i] - sender.first;
    if (slot < 0 || slot >= sender.times.length) {
      unmatched++;
      continue;
    }
    matched++;
    const t = rTime[i];
    const us = Math.max(1, (t - sender.times[slot]) * 1000);
    const bucket = Math.floor(Math.log(us) * LOG_K);
    hist.set(bucket, (hist.get(bucket) || 0) + 1);
    if (us > maxUs) maxUs = us;
    if (t < firstAt) firstAt = t;
    if (t > lastAt) lastAt = t;
  }
  reply({
    ev: "latency",
    matched,
    unmatched,
    hist: [...hist.entries()],
    max_us: maxUs,
    first: Number.isFinite(firstAt) ? firstAt : null,
    last: lastAt || null,
  });
}

// Every editor's view of its document, to check that they converged.
function digest() {
  const docs = {};
  for (const editor of editors) {
    if (editor.doc === null) continue;
    const content = editor.text.toString();
    let hash = 2166136261;
    for (let i = 0; i < content.length; i++) {
      hash ^= content.charCodeAt(i);
      hash = Math.imul(hash, 16777619) >>> 0;
    }
    (docs[editor.docName] = docs[editor.docName] || []).push(`${content.length}:${hash}`);
  }
  reply({ ev: "digest", docs });
}

function exit() {
  closing = true;
  for (const editor of editors) {
    try {
      if (editor.provider) editor.provider.destroy();
      if (editor.ws) editor.ws.destroy();
      if (editor.awareness && !editor.provider) editor.awareness.destroy();
      if (editor.socket) editor.socket.close();
    } catch (err) {
      // closing anyway
    }
  }
  setTimeout(() => process.exit(0), 200);
}

// Start noting receipts (editors that only watch: typing starts elsewhere).
function record() {
  rn = 0;
  recording = true;
  for (const editor of editors) {
    editor.firstClock = -1;
    editor.times = [];
  }
  reply({ ev: "recording" });
}

const handlers = {
  connect,
  record: async () => record(),
  join,
  type,
  sends: async () => sends(),
  latency: async (cmd) => latency(cmd),
  count: async () => reply({ ev: "count", received: rn, dropped, errors: { ...errors } }),
  digest: async () => digest(),
  exit: async () => exit(),
};

// Commands run one at a time, in order.
let queue = Promise.resolve();
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = JSON.parse(line);
  queue = queue.then(() =>
    Promise.resolve(handlers[cmd.cmd](cmd)).catch((err) =>
      reply({ ev: "error", message: String(err && err.stack) }),
    ),
  );
});
process.stdin.on("end", exit);
