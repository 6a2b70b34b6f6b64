/**
 * TandemYjsProvider: keeps one Yjs document in sync with a Tandem server over Socket.IO, as the
 * collaborative-documents wire contract says (requests doc.join / doc.update / doc.sync /
 * doc.awareness / doc.leave, each with an ack; pushes doc.update / doc.awareness / doc.closed).
 *
 *   import * as Y from "yjs";
 *   import { TandemYjsProvider } from "./provider.js";  // or window.TandemYjs (tandem-yjs.js)
 *
 *   const client = Tandem.connect("", { token });  // or: const socket = io(url, { auth })
 *   const provider = new TandemYjsProvider(client.socket, "notes-1", new Y.Doc(), {
 *     onStatus: (status) => {},  // connecting | synced | disconnected | failed | closed
 *     onReset: (doc, awareness) => {},  // a new epoch: bind the editor to the new doc
 *     onError: (error) => {},  // {code, message, retryable, event}
 *     onClosed: ({ code, message }) => {},  // deleted or access revoked: syncing has stopped
 *   });
 *   provider.awareness.setLocalStateField("user", { id, name, color, colorLight });
 *   await provider.whenSynced;
 *   const ytext = provider.doc.getText("content");  // read provider.doc: a reset replaces it
 *   // ... bind an editor (y-codemirror.next: yCollab(ytext, provider.awareness)) ...
 *   provider.destroy();  // doc.leave; the Y.Doc stays usable
 *
 * How it behaves:
 * - Joins on every (re)connect with its state vector, epoch and awareness, applies what it lacks,
 *   then sends what the server lacks: edits made offline merge on reconnect. Nothing is queued
 *   while disconnected; the join handshake is the queue.
 * - Local updates go out as doc.update, those of one 20 ms window merged into one. A failed one
 *   (retryable error or no answer) is healed by a doc.sync with backoff; permission_denied makes
 *   the provider read-only (reported once). A viewer's join also makes it read-only.
 * - Own awareness changes go out at most every 50 ms (always the latest state); remote states
 *   are dropped locally on disconnect. Every resyncIntervalMs a doc.sync catches anything missed.
 * - If the server answers a join with `reset` (the document was recreated or rebuilt under a
 *   new epoch since this doc last synced), the old doc is never merged into it: the provider
 *   builds a new Y.Doc and Awareness from the server's state (carrying the local awareness state
 *   over, without the cursor), replaces provider.doc and provider.awareness, calls onReset.
 * - Binary goes out as ArrayBuffer (sent as binary by both Socket.IO parsers, JSON and msgpack)
 *   and may come in as ArrayBuffer or Uint8Array.
 * - Pass one shared socket to as many providers (one per document) as you like.
 */
import * as Y from "yjs";
import * as awarenessProtocol from "y-protocols/awareness";

// Refusals worth retrying even when the server did not mark them retryable.
const TRANSIENT = new Set([
  "rate_limited", "broker_unavailable", "internal", "shutdown", "timeout",
]);
const BATCH_MS = 20;
const BATCH_MAX_UPDATES = 100; // Y.mergeUpdates is superlinear: keep batches small
const BATCH_MAX_BYTES = 64 * 1024;
const AWARENESS_MS = 50;
const noop = () => {};

const retryable = (error) => Boolean(error.retryable) || TRANSIENT.has(error.code);
const bareId = (doc) => String(doc).replace(/^doc:/, "");
const EMPTY = new Uint8Array([0, 0]); // an update with nothing in it
// socket.io-client hands binary attachments over as ArrayBuffer in browsers, Buffer in Node.
const bytes = (data) => (data instanceof Uint8Array ? data : new Uint8Array(data || EMPTY));
// Binary goes out as ArrayBuffer: both parsers send that as binary, while the msgpack one's
// browser encoder (notepack.io) would turn a Uint8Array into a map of its indices.
const wire = (u8) =>
  u8.byteOffset === 0 && u8.byteLength === u8.buffer.byteLength
    ? u8.buffer
    : u8.buffer.slice(u8.byteOffset, u8.byteOffset + u8.byteLength);

function deferred() {
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}

// Whether `update` (ours, relative to the server's state vector) holds anything the server lacks.
// Y.encodeStateAsUpdate always carries the whole delete set, so "no structs" is not enough: compare
// our deletions with those in `theirs` (the server's own diff, which carries its whole delete set).
function adds(update, theirs) {
  if (update.length <= 2) return false;
  const ours = Y.decodeUpdate(update);
  if (ours.structs.length > 0) return true;
  if (ours.ds.clients.size === 0) return false;
  const known = Y.mergeDeleteSets([Y.decodeUpdate(theirs).ds]); // sorted and merged
  return !Y.equalDeleteSets(known, Y.mergeDeleteSets([known, ours.ds]));
}

export class TandemYjsProvider {
  /**
   * @param {import('socket.io-client').Socket} socket connected or not (on/off/emit/timeout)
   * @param {string} docId the document id ("notes-1"; "doc:notes-1" means the same)
   * @param {Y.Doc} ydoc the local document (may already hold state, e.g. from IndexedDB)
   * @param {object} [options]
   * @param {awarenessProtocol.Awareness} [options.awareness] default: a new Awareness(ydoc)
   * @param {string} [options.epoch] the epoch `ydoc` was last synced under (persist provider.epoch)
   * @param {number} [options.resyncIntervalMs] periodic doc.sync; 0 turns it off
   * @param {number} [options.ackTimeoutMs] how long to wait for an ack
   */
  constructor(socket, docId, ydoc, options = {}) {
    const { awareness = null, epoch = null, resyncIntervalMs = 30000, ackTimeoutMs = 10000 } =
      options;
    const { onStatus = noop, onReset = noop, onError = noop, onClosed = noop } = options;
    this.socket = socket;
    this.docId = bareId(docId);
    this.doc = ydoc;
    this.awareness = awareness || new awarenessProtocol.Awareness(ydoc);
    this.epoch = epoch;
    this.role = null; // 'editor' | 'viewer', from the last join
    this.format = null;
    this.status = null;
    this.synced = false;
    this.joined = false; // the server answered our doc.join on this connection
    this.readOnly = false;
    this.closed = false;
    this._ownsAwareness = !awareness;
    this._callbacks = { onStatus, onReset, onError, onClosed };
    this._ackTimeoutMs = ackTimeoutMs;
    this._session = 0; // bumped by each join and disconnect: acks from before are ignored
    this._inbox = null; // pushes that arrive while a join is in flight, applied after its answer
    this._batch = [];
    this._batchBytes = 0;
    this._batchTimer = null;
    this._awarenessIds = new Set(); // own client ids changed since the last doc.awareness
    this._awarenessTimer = null;
    this._awarenessAt = 0; // when the next doc.awareness may go out
    this._retryTimer = null;
    this._retries = 0;
    this._deniedReported = false;
    this._whenSynced = deferred();

    this._handlers = {
      connect: () => this._join(),
      disconnect: () => this._disconnected(),
      "doc.update": (message) => this._push("doc.update", message),
      "doc.awareness": (message) => this._push("doc.awareness", message),
      "doc.closed": (message) =>
        message && bareId(message.doc) === this.docId && this._close(message),
    };
    for (const [event, handler] of Object.entries(this._handlers)) socket.on(event, handler);
    this._onDocUpdate = (update, origin) => this._local(update, origin);
    this._onAwarenessUpdate = (changes, origin) => this._localAwareness(changes, origin);
    this._watch();
    this._onUnload = () => {
      this.awareness.setLocalState(null);
      this._sendAwareness(); // best effort, before the page goes
    };
    if (typeof globalThis.addEventListener === "function") {
      globalThis.addEventListener("beforeunload", this._onUnload);
    }
    this._resyncTimer =
      resyncIntervalMs > 0
        ? setInterval(() => this.joined && !this._retryTimer && this._sync(), resyncIntervalMs)
        : null;
    if (socket.connected) this._join();
  }

  /** Resolves (to the provider) once synced; after a disconnect, at the next sync. */
  get whenSynced() {
    return this._whenSynced.promise;
  }

  /** Leave the document (doc.leave) and stop; the Y.Doc is left as it is. */
  destroy() {
    if (!this.closed) {
      if (this.socket.connected) this.socket.emit("doc.leave", { doc: this.docId });
      this._stop();
    }
    if (this._ownsAwareness) this.awareness.destroy();
  }

  _join() {
    if (this.closed || !this.socket.connected) return;
    this._session++;
    this.joined = false;
    this._inbox = [];
    this._status("connecting");
    const request = { doc: this.docId, sv: Y.encodeStateVector(this.doc) };
    if (this.epoch) request.epoch = this.epoch;
    const { awareness } = this;
    if (awareness.getLocalState() !== null) {
      // A new clock: whoever removed our state when we left still holds its old clock and
      // would ignore the same clock again (y-protocols), leaving us invisible until a renewal.
      awareness.setLocalState(awareness.getLocalState());
      request.awareness = awarenessProtocol.encodeAwarenessUpdate(awareness, [awareness.clientID]);
    }
    this._awarenessIds.clear(); // the join carries our latest awareness state
    this._request("doc.join", request, (ack) => this._joined(ack), (error) => {
      this._inbox = null;
      if (retryable(error)) return this._retryLater(() => this._join());
      this._callbacks.onError(error);
      this._status("failed"); // tried again at the next reconnect
    });
  }

  _joined(ack) {
    const inbox = this._inbox || [];
    this._inbox = null;
    const oldId = ack.reset ? this._reset(bytes(ack.update)) : null;
    if (!ack.reset) Y.applyUpdate(this.doc, bytes(ack.update), this);
    if (ack.awareness) this._apply("doc.awareness", ack.awareness);
    // The server answered with our join's awareness state, still under the old doc's id.
    if (this.awareness.states.has(oldId)) {
      awarenessProtocol.removeAwarenessStates(this.awareness, [oldId], this);
    }
    if (ack.epoch) this.epoch = ack.epoch;
    this.role = ack.role || "editor";
    this.format = ack.format || null;
    this.readOnly = this.role === "viewer";
    this._deniedReported = false;
    this.joined = true;
    this._retries = 0;
    for (const [event, message] of inbox) this._apply(event, message.update);
    this._pushMissing(ack.sv, ack.update);
    if (this._awarenessIds.size) this._sendAwarenessSoon();
    this.synced = true;
    this._whenSynced.resolve(this);
    this._status("synced");
    if (ack.reset) this._callbacks.onReset(this.doc, this.awareness);
  }

  // A new epoch: start again from the server's state; the old doc is never merged into it.
  // Returns the old awareness client id.
  _reset(update) {
    const old = this.awareness;
    const local = old.getLocalState();
    this._unwatch();
    if (local !== null) {
      // Tell the others that our old awareness id is gone (the new doc brings a new id).
      old.setLocalState(null);
      this._emitAwareness(awarenessProtocol.encodeAwarenessUpdate(old, [old.clientID]));
    }
    if (this._ownsAwareness) old.destroy();
    this.doc = new Y.Doc({ gc: this.doc.gc });
    Y.applyUpdate(this.doc, update, this);
    this.awareness = new awarenessProtocol.Awareness(this.doc);
    this._ownsAwareness = true;
    this._awarenessIds.clear();
    this._watch();
    // The cursor's relative positions point into the old doc.
    if (local !== null) this.awareness.setLocalState({ ...local, cursor: null });
    return old.clientID;
  }

  // Send what the server lacks, given its state vector and its own diff for us. True if sent.
  _pushMissing(sv, theirs) {
    if (this.readOnly) return false;
    const update = Y.encodeStateAsUpdate(this.doc, bytes(sv));
    if (!adds(update, bytes(theirs))) return false;
    this._sendUpdate(update);
    return true;
  }

  _local(update, origin) {
    if (origin === this || !this.joined || this.readOnly) return;
    this._batch.push(update);
    this._batchBytes += update.length;
    const full = this._batch.length >= BATCH_MAX_UPDATES || this._batchBytes >= BATCH_MAX_BYTES;
    if (full) this._flush();
    else if (!this._batchTimer) this._batchTimer = setTimeout(() => this._flush(), BATCH_MS);
  }

  _flush() {
    clearTimeout(this._batchTimer);
    const batch = this._batch;
    this._batch = [];
    this._batchBytes = 0;
    this._batchTimer = null;
    if (batch.length) this._sendUpdate(batch.length === 1 ? batch[0] : Y.mergeUpdates(batch));
  }

  _sendUpdate(update) {
    if (!this.joined) return;
    const ok = () => (this._retries = 0);
    this._request("doc.update", { doc: this.docId, update }, ok, (error) => {
      if (error.code === "permission_denied") {
        this.readOnly = true;
        if (!this._deniedReported) this._callbacks.onError(error);
        this._deniedReported = true;
      } else if (retryable(error)) {
        this._retryLater();
      } else {
        this._callbacks.onError(error);
      }
    });
  }

  // Anti-entropy: fetch what we lack, push back what the server lacks.
  _sync() {
    if (!this.joined) return;
    const request = { doc: this.docId, sv: Y.encodeStateVector(this.doc) };
    const ok = (ack) => {
      Y.applyUpdate(this.doc, bytes(ack.update), this);
      if (!this._pushMissing(ack.sv, ack.update)) this._retries = 0;
    };
    this._request("doc.sync", request, ok, (error) =>
      retryable(error) ? this._retryLater() : this._callbacks.onError(error),
    );
  }

  _retryLater(retry = () => this._sync()) {
    if (this._retryTimer) return;
    const delay = Math.min(500 * 2 ** this._retries++, 30000) * (0.5 + Math.random() / 2);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      retry();
    }, delay);
  }

  _push(event, message) {
    if (this.closed || !message || bareId(message.doc) !== this.docId) return;
    if (this._inbox) this._inbox.push([event, message]);
    else this._apply(event, message.update);
  }

  _apply(event, update) {
    try {
      if (event === "doc.update") Y.applyUpdate(this.doc, bytes(update), this);
      else awarenessProtocol.applyAwarenessUpdate(this.awareness, bytes(update), this);
    } catch (error) {
      this._callbacks.onError({ code: "invalid_payload", message: String(error), event });
    }
  }

  _localAwareness({ added, updated, removed }, origin) {
    if (origin !== "local") return;
    for (const id of added.concat(updated, removed)) this._awarenessIds.add(id);
    this._sendAwarenessSoon();
  }

  _sendAwarenessSoon() {
    if (this._awarenessTimer || !this.joined) return;
    const wait = this._awarenessAt - Date.now();
    if (wait <= 0) return this._sendAwareness();
    this._awarenessTimer = setTimeout(() => {
      this._awarenessTimer = null;
      this._sendAwareness();
    }, wait);
  }

  // Encoded when sent, so it is always the latest state.
  _sendAwareness() {
    if (!this.joined || !this._awarenessIds.size) return;
    const ids = [...this._awarenessIds];
    this._awarenessIds.clear();
    this._awarenessAt = Date.now() + AWARENESS_MS;
    const update = awarenessProtocol.encodeAwarenessUpdate(this.awareness, ids);
    this._emitAwareness(update, (error) => {
      if (!retryable(error)) return this._callbacks.onError(error);
      for (const id of ids) if (this.awareness.meta.has(id)) this._awarenessIds.add(id);
      this._awarenessAt = Date.now() + 1000;
      this._sendAwarenessSoon();
    });
  }

  _emitAwareness(update, onFail = noop) {
    if (!this.socket.connected) return;
    this._request("doc.awareness", { doc: this.docId, update }, noop, onFail);
  }

  // Emit with an ack; an answer from an earlier session (before a disconnect or rejoin) is dropped.
  _request(event, payload, onOk, onFail) {
    const session = this._session;
    for (const key in payload) {
      if (payload[key] instanceof Uint8Array) payload[key] = wire(payload[key]);
    }
    this.socket.timeout(this._ackTimeoutMs).emit(event, payload, (timeout, ack) => {
      if (session !== this._session || this.closed) return;
      if (!timeout && ack && ack.ok) return onOk(ack);
      const error = timeout
        ? { code: "timeout", message: `no answer to ${event}`, retryable: true }
        : (ack && ack.error) || { code: "internal", message: `malformed ack to ${event}` };
      onFail({ ...error, event });
    });
  }

  _disconnected() {
    if (this.closed) return;
    this._forget();
    this._status("disconnected");
  }

  // Forget everything that belongs to the current connection.
  _forget() {
    this._session++;
    this.joined = false;
    this._inbox = null;
    this._batch = [];
    this._batchBytes = 0;
    this._retries = 0;
    for (const timer of ["_batchTimer", "_retryTimer", "_awarenessTimer"]) {
      clearTimeout(this[timer]);
      this[timer] = null;
    }
    if (this.synced) this._whenSynced = deferred();
    this.synced = false;
    // Remote states would otherwise linger (as ghosts) until their 30 s timeout. Their clocks
    // go too: the re-join brings the same states with the same clocks, which y-protocols would
    // ignore as already seen.
    const { awareness } = this;
    const others = [...awareness.getStates().keys()].filter((id) => id !== awareness.clientID);
    if (others.length) awarenessProtocol.removeAwarenessStates(awareness, others, this);
    for (const id of others) awareness.meta.delete(id);
  }

  _close({ code, message }) {
    this._stop();
    this._callbacks.onClosed({ code, message });
  }

  _stop() {
    this._forget();
    this.closed = true;
    clearInterval(this._resyncTimer);
    for (const [event, handler] of Object.entries(this._handlers)) this.socket.off(event, handler);
    this._unwatch();
    if (typeof globalThis.removeEventListener === "function") {
      globalThis.removeEventListener("beforeunload", this._onUnload);
    }
    this._status("closed");
  }

  _watch() {
    this.doc.on("update", this._onDocUpdate);
    this.awareness.on("update", this._onAwarenessUpdate);
  }

  _unwatch() {
    this.doc.off("update", this._onDocUpdate);
    this.awareness.off("update", this._onAwarenessUpdate);
  }

  _status(status) {
    if (status === this.status) return;
    this.status = status;
    this._callbacks.onStatus(status);
  }
}
