// Writes COUNT Yjs updates of single-character typing at random positions of the Y.Text
// 'content' (as editors make them, one update per keystroke), for bench/docs_log.py.
// Usage: node docs_gen.js COUNT CLIENTS SEED OUT_FILE
//
// CLIENTS authors take turns, one keystroke each, on one Y.Doc (its clientID switched between
// transactions): the updates are those of CLIENTS editors that see each other's keystrokes at
// once. Yjs finds a text index through its search markers; pycrdt has none and takes minutes
// for 100,000 random-position inserts. OUT_FILE: each update as a 4-byte little-endian length
// and its bytes.
"use strict";
const fs = require("fs");
const Y = require("yjs");

const [count, clients, seed] = process.argv.slice(2, 5).map(Number);
const out = process.argv[5];
if (!(count > 0 && clients > 0 && out)) {
  process.stderr.write("usage: node docs_gen.js COUNT CLIENTS SEED OUT_FILE\n");
  process.exit(2);
}

// mulberry32: the same updates for the same seed.
let state = seed >>> 0;
function random() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

const doc = new Y.Doc();
const text = doc.getText("content");
const ids = Array.from({ length: clients }, (_, i) => 1000 + i + Math.floor(random() * 1e6) * 100);
const chunks = [];
let bytes = 0;
doc.on("update", (update) => {
  const header = Buffer.alloc(4);
  header.writeUInt32LE(update.length);
  chunks.push(header, Buffer.from(update));
  bytes += update.length;
});
const letters = "abcdefghijklmnopqrstuvwxyz ";
for (let i = 0; i < count; i++) {
  doc.clientID = ids[i % clients];
  text.insert(Math.floor(random() * (text.length + 1)), letters[Math.floor(random() * letters.length)]);
}
fs.writeFileSync(out, Buffer.concat(chunks));
process.stdout.write(JSON.stringify({ updates: count, bytes, length: text.length }) + "\n");
