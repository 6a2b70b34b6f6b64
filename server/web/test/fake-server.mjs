// An in-process stand-in for Tandem's side of the collaborative-documents contract, built on Yjs,
// and a fake socket.io-client Socket wired to it. Enough to test the provider's logic without a
// server: acks and pushes arrive asynchronously and in order, binary arrives as an ArrayBuffer
// (as socket.io-client gives it in browsers), a dropped connection fails its pending acks, and
// faults (an error ack, or no ack at all) can be injected per event.
import { EventEmitter } from "node:events";
import * as Y from "yjs";
import * as awarenessProtocol from "y-protocols/awareness";

const bareId = (doc) => String(doc).replace(/^doc:/, "");
const wire = (u) => u.buffer.slice(u.byteOffset, u.byteOffset + u.byteLength); // -> ArrayBuffer
const received = (data) => new Uint8Array(data); // what python-socketio would hand over: a copy

export class FakeSocket extends EventEmitter {
  constructor(server, role) {
    super();
    this.server = server;
    this.role = role;
    this.connected = false;
    this.id = undefined;
    this.sent = []; // every {event, payload} the client emitted
    this._connections = 0;
    this._pending = new Set(); // ack callbacks of timeout()-emits still waiting
  }

  connect() {
    this.connected = true;
    this.id = `sid-${++this._connections}`;
    super.emit("connect");
  }

  drop() {
    if (!this.connected) return;
    this.connected = false;
    this.id = undefined;
    this.server.disconnected(this);
    super.emit("disconnect", "transport close");
    // socket.io-client fails the acks a disconnect leaves unanswered (Socket._clearAcks).
    for (const fail of [...this._pending]) fail(new Error("socket has been disconnected"));
  }

  emit(event, payload, ack) {
    // socket.io-client would buffer it and send it after the reconnect: the provider must not.
    if (!this.connected) throw new Error(`${event} emitted while disconnected`);
    for (const [key, value] of Object.entries(payload || {})) {
      // socket.io-msgpack-parser's browser encoder would send a typed array as a map.
      if (ArrayBuffer.isView(value)) throw new Error(`${event}.${key}: send an ArrayBuffer`);
    }
    this.sent.push({ event, payload });
    const connection = this.id;
    this.server.handle(
      this,
      event,
      payload,
      ack &&
        ((answer) => {
          if (this.id === connection) ack(answer);
        }),
    );
    return this;
  }

  timeout(ms) {
    return {
      emit: (event, payload, callback) => {
        const finish = (error, answer) => {
          if (!this._pending.delete(fail)) return;
          clearTimeout(timer);
          callback(error, answer);
        };
        const fail = (error) => finish(error);
        const timer = setTimeout(() => finish(new Error("operation has timed out")), ms);
        this._pending.add(fail);
        this.emit(event, payload, (answer) => finish(null, answer));
      },
    };
  }

  deliver(event, payload) {
    if (this.connected) super.emit(event, payload);
  }

  sentEvents(event) {
    return this.sent.filter((message) => message.event === event);
  }
}

export class FakeServer {
  constructor() {
    this.rooms = new Map();
    this._faults = []; // [{event, error | 'drop'}], each used once
    this._epochs = 0;
  }

  socket({ role = "editor" } = {}) {
    return new FakeSocket(this, role);
  }

  room(id) {
    let room = this.rooms.get(id);
    if (!room) {
      const awareness = new awarenessProtocol.Awareness(new Y.Doc());
      awareness.setLocalState(null); // the server is no user
      room = { id, doc: new Y.Doc(), epoch: `e${++this._epochs}`, awareness, members: new Map() };
      // Which awareness ids each connection introduced (so they go when it goes).
      awareness.on("update", ({ added, updated, removed }, origin) => {
        const ids = room.members.get(origin);
        if (!ids) return;
        for (const id of added.concat(updated)) ids.add(id);
        for (const id of removed) ids.delete(id);
      });
      this.rooms.set(id, room);
    }
    return room;
  }

  text(id) {
    return this.room(id).doc.getText("content").toString();
  }

  // The next `event` request gets `error` ({code, message, retryable}) or, with 'drop', no ack.
  fail(event, error) {
    this._faults.push({ event, error });
  }

  // A server-side edit, pushed to every member.
  edit(id, change) {
    const room = this.room(id);
    const updates = [];
    const capture = (update) => updates.push(update);
    room.doc.on("update", capture);
    change(room.doc.getText("content"));
    room.doc.off("update", capture);
    for (const update of updates) this._broadcast(room, null, "doc.update", update);
  }

  // A new epoch with fresh content (as a restore from scratch or a re-creation would give).
  reset(id, text) {
    const room = this.room(id);
    room.doc = new Y.Doc();
    room.doc.getText("content").insert(0, text);
    room.epoch = `e${++this._epochs}`;
  }

  close(id, code = "not_found") {
    const room = this.room(id);
    for (const socket of room.members.keys()) {
      setImmediate(() => socket.deliver("doc.closed", { doc: id, code, message: "gone" }));
    }
    room.members.clear();
  }

  handle(socket, event, payload, ack) {
    const at = this._faults.findIndex((fault) => fault.event === event);
    const fault = at >= 0 ? this._faults.splice(at, 1)[0].error : null;
    if (fault === "drop") return;
    const answer = fault ? { ok: false, error: fault } : this._answer(socket, event, payload);
    if (ack) setImmediate(() => ack(answer));
  }

  disconnected(socket) {
    for (const room of this.rooms.values()) this._leave(room, socket);
  }

  destroy() {
    for (const room of this.rooms.values()) room.awareness.destroy();
  }

  _answer(socket, event, payload) {
    const room = this.room(bareId(payload.doc));
    if (event === "doc.join") return this._join(room, socket, payload);
    if (!room.members.has(socket)) return error("permission_denied", "join first");
    if (event === "doc.update") {
      if (socket.role === "viewer") return error("permission_denied", "viewers cannot edit");
      const update = received(payload.update);
      try {
        Y.applyUpdate(room.doc, update, socket);
      } catch (_) {
        return error("invalid_payload", "not a Yjs update");
      }
      this._broadcast(room, socket, "doc.update", update);
      return { ok: true };
    }
    if (event === "doc.sync") {
      const update = Y.encodeStateAsUpdate(room.doc, received(payload.sv));
      return { ok: true, update: wire(update), sv: wire(Y.encodeStateVector(room.doc)) };
    }
    if (event === "doc.awareness") {
      this._awareness(room, socket, received(payload.update));
      return { ok: true };
    }
    if (event === "doc.leave") {
      this._leave(room, socket);
      return { ok: true };
    }
    return error("invalid_payload", `unknown event ${event}`);
  }

  _join(room, socket, { sv, epoch, awareness }) {
    if (!room.members.has(socket)) room.members.set(socket, new Set());
    const reset = Boolean(epoch) && epoch !== room.epoch;
    const update =
      reset || !sv
        ? Y.encodeStateAsUpdate(room.doc)
        : Y.encodeStateAsUpdate(room.doc, received(sv));
    if (awareness) this._awareness(room, socket, received(awareness));
    const states = [...room.awareness.getStates().keys()];
    return {
      ok: true,
      doc: room.id,
      epoch: room.epoch,
      reset,
      role: socket.role,
      format: "text",
      update: wire(update),
      sv: wire(Y.encodeStateVector(room.doc)),
      awareness: wire(awarenessProtocol.encodeAwarenessUpdate(room.awareness, states)),
    };
  }

  _awareness(room, socket, update) {
    awarenessProtocol.applyAwarenessUpdate(room.awareness, update, socket);
    this._broadcast(room, socket, "doc.awareness", update);
  }

  _leave(room, socket) {
    const ids = room.members.get(socket);
    if (!ids) return;
    room.members.delete(socket);
    if (!ids.size) return;
    awarenessProtocol.removeAwarenessStates(room.awareness, [...ids], "server");
    const update = awarenessProtocol.encodeAwarenessUpdate(room.awareness, [...ids]);
    this._broadcast(room, socket, "doc.awareness", update);
  }

  _broadcast(room, sender, event, update) {
    for (const member of room.members.keys()) {
      if (member === sender) continue;
      setImmediate(() => member.deliver(event, { doc: room.id, update: wire(update) }));
    }
  }
}

function error(code, message, retryable = false) {
  return { ok: false, error: { code, message, retryable } };
}
