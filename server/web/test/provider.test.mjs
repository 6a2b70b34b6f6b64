// The provider's logic against an in-process fake server (test/fake-server.mjs): npm test.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as Y from "yjs";
import * as awarenessProtocol from "y-protocols/awareness";
import { TandemYjsProvider } from "../src/provider.js";
import { FakeServer } from "./fake-server.mjs";

const DOC = "notes-1";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition, what = "condition", ms = 3000) {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function fakeServer(t) {
  const server = new FakeServer();
  t.after(() => server.destroy());
  return server;
}

// A provider on a fresh socket; `connect: false` leaves the socket disconnected.
function peer(t, server, { role, connect = true, text = "", doc = DOC, ...options } = {}) {
  const socket = server.socket({ role });
  const ydoc = new Y.Doc();
  if (text) ydoc.getText("content").insert(0, text);
  const seen = { status: [], errors: [], resets: [], closed: [] };
  const provider = new TandemYjsProvider(socket, doc, ydoc, {
    resyncIntervalMs: 0,
    onStatus: (status) => seen.status.push(status),
    onError: (error) => seen.errors.push(error),
    onReset: (newDoc, awareness) => seen.resets.push({ newDoc, awareness }),
    onClosed: (info) => seen.closed.push(info),
    ...options,
  });
  t.after(() => provider.destroy());
  if (connect) socket.connect();
  return { socket, provider, seen, text: () => provider.doc.getText("content").toString() };
}

test("join handshake: the client gets what it lacks and sends what the server lacks", async (t) => {
  const server = fakeServer(t);
  server.edit(DOC, (text) => text.insert(0, "server "));
  const a = peer(t, server, { text: "client", connect: false });
  a.provider.awareness.setLocalStateField("user", { name: "Ann", color: "#f00" });
  a.socket.connect();
  assert.equal(await a.provider.whenSynced, a.provider);

  const [join] = a.socket.sentEvents("doc.join");
  assert.equal(join.payload.doc, DOC);
  assert.ok(join.payload.sv instanceof ArrayBuffer);
  assert.ok(join.payload.awareness instanceof ArrayBuffer, "own awareness goes with the join");
  assert.equal(join.payload.epoch, undefined);
  await until(() => server.text(DOC) === a.text(), "server and client to converge");
  assert.match(a.text(), /server/);
  assert.match(a.text(), /client/);
  assert.equal(a.provider.synced, true);
  assert.equal(a.provider.epoch, server.room(DOC).epoch);
  assert.equal(a.provider.role, "editor");
  assert.deepEqual(a.seen.status, ["connecting", "synced"]);
  // The server saw the awareness state that came with the join.
  const states = server.room(DOC).awareness.getStates();
  assert.equal(states.get(a.provider.doc.clientID).user.name, "Ann");
});

test("an empty client sends nothing back after the join", async (t) => {
  const server = fakeServer(t);
  server.edit(DOC, (text) => {
    text.insert(0, "hello world");
    text.delete(0, 6); // a delete set: the diff back is never "empty" by length alone
  });
  const a = peer(t, server);
  await a.provider.whenSynced;
  assert.equal(a.text(), "world");
  await sleep(30);
  assert.equal(a.socket.sentEvents("doc.update").length, 0);
});

test("live edits flow both ways and are never echoed back", async (t) => {
  const server = fakeServer(t);
  const a = peer(t, server);
  const b = peer(t, server);
  await Promise.all([a.provider.whenSynced, b.provider.whenSynced]);

  a.provider.doc.getText("content").insert(0, "from a. ");
  await until(() => b.text() === "from a. ", "b to see a");
  b.provider.doc.getText("content").insert(8, "from b.");
  await until(() => a.text() === "from a. from b.", "a to see b");
  server.edit(DOC, (text) => text.insert(0, "> "));
  await until(() => a.text() === b.text() && a.text().startsWith("> "), "server edit everywhere");

  assert.equal(a.socket.sentEvents("doc.update").length, 1, "a sent only its own edit");
  assert.equal(b.socket.sentEvents("doc.update").length, 1, "b sent only its own edit");
});

test("updates of one 20 ms window go out merged in one doc.update", async (t) => {
  const server = fakeServer(t);
  const a = peer(t, server);
  await a.provider.whenSynced;
  const text = a.provider.doc.getText("content");
  for (const ch of "typing") text.insert(text.length, ch); // six transactions
  await until(() => server.text(DOC) === "typing", "the batch to arrive");
  assert.equal(a.socket.sentEvents("doc.update").length, 1);
});

test("offline edits are not queued and merge on re-join", async (t) => {
  const server = fakeServer(t);
  const a = peer(t, server);
  const b = peer(t, server);
  await Promise.all([a.provider.whenSynced, b.provider.whenSynced]);
  a.provider.doc.getText("content").insert(0, "shared.");
  await until(() => b.text() === "shared.", "b to get the shared text");

  a.socket.drop();
  assert.equal(a.provider.synced, false);
  assert.equal(a.seen.status.at(-1), "disconnected");
  const sentBefore = a.socket.sent.length;
  a.provider.doc.getText("content").insert(0, "A offline. "); // the fake throws if emitted now
  b.provider.doc.getText("content").insert(7, " B online.");
  await sleep(40);
  assert.equal(a.socket.sent.length, sentBefore, "nothing sent while disconnected");

  const synced = a.provider.whenSynced;
  a.socket.connect();
  await synced;
  await until(
    () => a.text() === b.text() && b.text() === server.text(DOC),
    "all three to converge",
  );
  assert.equal(a.text(), "A offline. shared. B online.");
  const [, rejoin] = a.socket.sentEvents("doc.join");
  assert.equal(rejoin.payload.epoch, server.room(DOC).epoch, "re-join names its epoch");
});

test("a join answered with reset replaces the doc and never merges the old one", async (t) => {
  const server = fakeServer(t);
  const a = peer(t, server, { text: "old local text", connect: false, epoch: "e-old" });
  server.edit(DOC, (text) => text.insert(0, "fresh server text"));
  const oldDoc = a.provider.doc;
  const oldAwareness = a.provider.awareness;
  a.provider.awareness.setLocalState({ user: { name: "Ann" }, cursor: { anchor: 1, head: 2 } });
  a.socket.connect();
  await a.provider.whenSynced;

  assert.equal(a.seen.resets.length, 1);
  const { newDoc, awareness } = a.seen.resets[0];
  assert.notEqual(newDoc, oldDoc);
  assert.equal(a.provider.doc, newDoc);
  assert.equal(a.provider.awareness, awareness);
  assert.notEqual(awareness, oldAwareness);
  assert.equal(a.text(), "fresh server text");
  assert.equal(a.provider.epoch, server.room(DOC).epoch);
  // The user carries over (the cursor does not: it pointed into the old doc) ...
  assert.deepEqual(awareness.getLocalState(), { user: { name: "Ann" }, cursor: null });
  assert.equal(awareness.getStates().size, 1, "no ghost of the old awareness id");
  // ... and the others learn that the old id left and the new one arrived.
  const states = server.room(DOC).awareness.getStates();
  await until(() => states.has(newDoc.clientID) && !states.has(oldDoc.clientID), "awareness swap");
  await sleep(30);
  assert.equal(server.text(DOC), "fresh server text", "old content never merged");

  // Edits on the new doc sync as usual; the old doc is no longer watched.
  oldDoc.getText("content").insert(0, "ignored ");
  newDoc.getText("content").insert(0, "> ");
  await until(() => server.text(DOC) === "> fresh server text", "edit on the new doc");
});

test("a reconnect after the server moved to a new epoch resets", async (t) => {
  const server = fakeServer(t);
  const a = peer(t, server);
  server.edit(DOC, (text) => text.insert(0, "before"));
  await a.provider.whenSynced;
  await until(() => a.text() === "before", "the first text");
  a.socket.drop();
  a.provider.doc.getText("content").insert(0, "offline ");
  server.reset(DOC, "restored");
  a.socket.connect();
  await a.provider.whenSynced;
  assert.equal(a.seen.resets.length, 1);
  assert.equal(a.text(), "restored");
  await sleep(30);
  assert.equal(server.text(DOC), "restored");
});

test("remote awareness is dropped on disconnect and comes back with the re-join", async (t) => {
  const server = fakeServer(t);
  const a = peer(t, server);
  const b = peer(t, server);
  await Promise.all([a.provider.whenSynced, b.provider.whenSynced]);
  a.provider.awareness.setLocalStateField("user", { name: "Ann" });
  b.provider.awareness.setLocalStateField("user", { name: "Bob" });
  const bId = b.provider.awareness.clientID;
  const aId = a.provider.awareness.clientID;
  await until(
    () => a.provider.awareness.getStates().get(bId)?.user?.name === "Bob",
    "a to see Bob",
  );
  await until(
    () => b.provider.awareness.getStates().get(aId)?.user?.name === "Ann",
    "b to see Ann",
  );

  a.socket.drop();
  assert.deepEqual([...a.provider.awareness.getStates().keys()], [aId]);
  await until(() => !b.provider.awareness.getStates().has(aId), "the server to remove Ann for b");

  a.socket.connect();
  await a.provider.whenSynced;
  assert.equal(a.provider.awareness.getStates().get(bId).user.name, "Bob");
  await until(() => b.provider.awareness.getStates().has(aId), "b to see Ann again");
});

test("awareness changes are throttled and the latest state wins", async (t) => {
  const server = fakeServer(t);
  const a = peer(t, server);
  const b = peer(t, server);
  await Promise.all([a.provider.whenSynced, b.provider.whenSynced]);
  for (let i = 0; i < 20; i++) a.provider.awareness.setLocalStateField("n", i);
  const aId = a.provider.awareness.clientID;
  await until(() => b.provider.awareness.getStates().get(aId)?.n === 19, "the last state");
  assert.ok(a.socket.sentEvents("doc.awareness").length <= 2);
});

test("a failed doc.update is healed by doc.sync with what the server lacks", async (t) => {
  const server = fakeServer(t);
  const a = peer(t, server);
  await a.provider.whenSynced;
  server.fail("doc.update", { code: "rate_limited", message: "slow down", retryable: true });
  a.provider.doc.getText("content").insert(0, "kept");
  await until(() => server.text(DOC) === "kept", "the retry to land", 5000);
  assert.equal(a.socket.sentEvents("doc.sync").length, 1);
  assert.deepEqual(a.seen.errors, [], "a retryable refusal is no error for the page");
});

test("an unanswered doc.update (and doc.sync) is retried with backoff", async (t) => {
  const server = fakeServer(t);
  const a = peer(t, server, { ackTimeoutMs: 50 });
  await a.provider.whenSynced;
  server.fail("doc.update", "drop");
  server.fail("doc.sync", "drop");
  a.provider.doc.getText("content").insert(0, "lost once");
  await until(() => server.text(DOC) === "lost once", "the retries to land", 5000);
  assert.equal(a.socket.sentEvents("doc.sync").length, 2);
});

test("permission_denied makes the provider read-only and is reported once", async (t) => {
  const server = fakeServer(t);
  const a = peer(t, server);
  await a.provider.whenSynced;
  server.fail("doc.update", { code: "permission_denied", message: "revoked", retryable: false });
  const text = a.provider.doc.getText("content");
  text.insert(0, "one");
  await until(() => a.seen.errors.length === 1, "the error");
  text.insert(0, "two");
  await sleep(40);
  assert.equal(a.provider.readOnly, true);
  assert.equal(a.seen.errors.length, 1);
  assert.equal(a.seen.errors[0].code, "permission_denied");
  assert.equal(a.seen.errors[0].event, "doc.update");
  assert.equal(a.socket.sentEvents("doc.update").length, 1);
});

test("a viewer receives edits and sends none", async (t) => {
  const server = fakeServer(t);
  const editor = peer(t, server);
  const viewer = peer(t, server, { role: "viewer" });
  await Promise.all([editor.provider.whenSynced, viewer.provider.whenSynced]);
  assert.equal(viewer.provider.role, "viewer");
  assert.equal(viewer.provider.readOnly, true);
  editor.provider.doc.getText("content").insert(0, "read me");
  await until(() => viewer.text() === "read me", "the viewer to see it");
  viewer.provider.doc.getText("content").insert(0, "x");
  await sleep(40);
  assert.equal(viewer.socket.sentEvents("doc.update").length, 0);
});

test("the periodic doc.sync catches up a missed update and pushes nothing needless", async (t) => {
  const server = fakeServer(t);
  const a = peer(t, server, { resyncIntervalMs: 30 });
  await a.provider.whenSynced;
  a.provider.doc.getText("content").insert(0, "abc def");
  a.provider.doc.getText("content").delete(0, 4);
  await until(() => server.text(DOC) === "def", "the edit");
  // An update the client never got pushed (as if a message was lost).
  const room = server.room(DOC);
  room.doc.getText("content").insert(0, "missed ");
  await until(() => a.text() === "missed def", "the periodic sync");
  const updates = a.socket.sentEvents("doc.update").length;
  const syncs = a.socket.sentEvents("doc.sync").length;
  // A few more rounds with nothing new on either side.
  await until(() => a.socket.sentEvents("doc.sync").length >= syncs + 3, "three more rounds");
  assert.equal(a.socket.sentEvents("doc.update").length, updates, "no redundant pushes");
});

test("pushes that arrive while the join is in flight are applied after it", async (t) => {
  const server = fakeServer(t);
  const a = peer(t, server, { epoch: "e-old", connect: false });
  const b = peer(t, server);
  await b.provider.whenSynced;
  // The join is answered with reset; an update right behind it must land in the new doc.
  server.edit(DOC, (text) => text.insert(0, "base"));
  a.socket.connect();
  server.edit(DOC, (text) => text.insert(4, "+late"));
  await a.provider.whenSynced;
  await until(() => a.text() === "base+late", "the late update in the new doc");
  assert.equal(a.seen.resets.length, 1);
});

test("doc.closed stops syncing and tells the page", async (t) => {
  const server = fakeServer(t);
  const a = peer(t, server);
  await a.provider.whenSynced;
  server.close(DOC, "not_found");
  await until(() => a.seen.closed.length === 1, "onClosed");
  assert.deepEqual(a.seen.closed[0], { code: "not_found", message: "gone" });
  assert.equal(a.provider.closed, true);
  assert.equal(a.seen.status.at(-1), "closed");
  a.provider.doc.getText("content").insert(0, "not sent");
  await sleep(40);
  assert.equal(a.socket.sentEvents("doc.update").length, 0);
});

test("destroy leaves the doc and removes every listener", async (t) => {
  const server = fakeServer(t);
  const socket = server.socket();
  const before = socket.eventNames().length;
  const ydoc = new Y.Doc();
  const provider = new TandemYjsProvider(socket, "doc:" + DOC, ydoc, { resyncIntervalMs: 0 });
  socket.connect();
  await provider.whenSynced;
  assert.equal(provider.docId, DOC, "the channel-style id is accepted");
  provider.destroy();
  assert.equal(socket.sentEvents("doc.leave").length, 1);
  assert.equal(socket.eventNames().length, before);
  assert.equal(ydoc._observers.get("update")?.size ?? 0, 0);
  assert.equal(server.room(DOC).members.size, 0);
});

test("binary payloads may arrive as ArrayBuffer or Uint8Array", async (t) => {
  const server = fakeServer(t);
  const a = peer(t, server);
  await a.provider.whenSynced;
  const other = new Y.Doc();
  other.getText("content").insert(0, "as bytes");
  const update = Y.encodeStateAsUpdate(other);
  a.socket.deliver("doc.update", { doc: DOC, update }); // Uint8Array (Node: Buffer)
  assert.equal(a.text(), "as bytes");
  const them = new awarenessProtocol.Awareness(new Y.Doc());
  them.setLocalState({ user: { name: "Zed" } });
  const states = awarenessProtocol.encodeAwarenessUpdate(them, [them.clientID]);
  a.socket.deliver("doc.awareness", { doc: "doc:" + DOC, update: states.buffer.slice(0) });
  assert.equal(a.provider.awareness.getStates().get(them.clientID).user.name, "Zed");
  a.socket.deliver("doc.update", { doc: "other-doc", update });
  them.destroy();
});

test("a refused join is retried when retryable and reported when not", async (t) => {
  const server = fakeServer(t);
  server.fail("doc.join", { code: "broker_unavailable", message: "later", retryable: true });
  const a = peer(t, server);
  await a.provider.whenSynced;
  assert.equal(a.socket.sentEvents("doc.join").length, 2);
  assert.deepEqual(a.seen.errors, []);

  server.fail("doc.join", { code: "permission_denied", message: "no", retryable: false });
  const b = peer(t, server);
  await until(() => b.seen.status.at(-1) === "failed", "the failed status");
  assert.equal(b.seen.errors[0].code, "permission_denied");
  assert.equal(b.seen.errors[0].event, "doc.join");
  b.socket.drop();
  b.socket.connect(); // the next connection tries again
  await b.provider.whenSynced;
});
