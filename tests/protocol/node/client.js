#!/usr/bin/env node
// A socket.io-client driven line by line: pytest writes JSON commands on stdin and reads
// JSON lines of what happened on stdout (tests/protocol/node_client.py is the Python side).
//
//   node client.js URL PARSER(json|msgpack) TRANSPORT(websocket|polling) [LIFETIME_MS]
//
// Commands (one JSON object per line):
//   {"op": "connect", "auth": {...}}     connect (or reconnect) with this auth payload
//   {"op": "emit", "ref": 1, "event": "subscribe", "args": [...], "timeout": 5000}
//                                        emitWithAck; prints {"type": "ack", "ref", "args"}
//   {"op": "disconnect"}                 client-side disconnect
//   {"op": "state"}                      prints {"type": "state", "connected", "active", ...}
//   {"op": "tick", "ref": 1, "ms": 250}  prints {"type": "tick", "ref"} after ms: timers run
//                                        in due order, so any timer of the client's due
//                                        earlier (a reconnect attempt) has run by then
//   {"op": "exit"}                       close everything and exit
// Printed lines: hello, connect, connect_error, disconnect, event, ack, ack_timeout,
// reconnect_attempt, manager_error, state, tick, fatal.
// Try it by hand:
//   echo '{"op":"connect","auth":{"token":"..."}}' | node client.js http://127.0.0.1:8000 json websocket
"use strict";

const { io } = require("socket.io-client");

const [url, parserName = "json", transport = "websocket", lifetimeArg = "30000"] =
  process.argv.slice(2);
if (!url || !["json", "msgpack"].includes(parserName)) {
  console.error("usage: node client.js URL json|msgpack websocket|polling [LIFETIME_MS]");
  process.exit(2);
}

function plain(value) {
  // Make whatever socket.io handed us JSON-printable (msgpack may give binary data).
  if (value instanceof Uint8Array || value instanceof ArrayBuffer || Buffer.isBuffer(value)) {
    return { $bytes: Buffer.from(value).toString("base64") };
  }
  if (Array.isArray(value)) return value.map(plain);
  if (value instanceof Error) return { name: value.name, message: value.message };
  if (value && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = plain(v);
    return out;
  }
  return value === undefined ? null : value;
}

function print(record) {
  process.stdout.write(JSON.stringify({ t: Date.now(), ...plain(record) }) + "\n");
}

const options = {
  transports: [transport],
  autoConnect: false,
  forceNew: true,
  reconnectionDelay: 200,
  reconnectionDelayMax: 500,
  randomizationFactor: 0,
  timeout: 5000,
};
if (parserName === "msgpack") options.parser = require("socket.io-msgpack-parser");

const socket = io(url, options);

socket.on("connect", () => {
  print({ type: "connect", id: socket.id, transport: socket.io.engine.transport.name });
});
socket.on("connect_error", (err) => {
  print({
    type: "connect_error",
    message: err.message,
    data: err.data === undefined ? null : err.data,
    active: socket.active,
  });
});
socket.on("disconnect", (reason, details) => {
  print({
    type: "disconnect",
    reason,
    details: details && details.description ? String(details.description) : null,
    active: socket.active,
  });
});
socket.onAny((name, ...args) => print({ type: "event", name, args }));
socket.io.on("reconnect_attempt", (attempt) => print({ type: "reconnect_attempt", attempt }));
socket.io.on("error", (err) => print({ type: "manager_error", message: String(err && err.message) }));

let finishing = false;
function finish(code) {
  if (finishing) return;
  finishing = true;
  const engine = socket.io.engine;
  const exit = () => process.stdout.write("", () => process.exit(code));
  if (!engine || engine.readyState === "closed") {
    socket.disconnect();
    exit();
    return;
  }
  // Close politely (over polling the close packet is a POST that must go out before we exit),
  // so that the server does not keep a long-poll open for a client that is gone.
  engine.once("close", () => setTimeout(exit, 20));
  setTimeout(exit, 1000).unref();
  socket.disconnect();
  engine.close();
}

async function handle(cmd) {
  switch (cmd.op) {
    case "connect":
      if (cmd.auth !== undefined) socket.auth = cmd.auth;
      socket.connect();
      break;
    case "emit": {
      try {
        const args = await socket.timeout(cmd.timeout || 5000).emitWithAck(cmd.event, ...(cmd.args || []));
        print({ type: "ack", ref: cmd.ref, args: [args] });
      } catch (err) {
        print({ type: "ack_timeout", ref: cmd.ref, message: String(err && err.message) });
      }
      break;
    }
    case "disconnect":
      socket.disconnect();
      break;
    case "state":
      print({
        type: "state",
        connected: socket.connected,
        active: socket.active,
        id: socket.id || null,
        recovered: socket.recovered,
      });
      break;
    case "tick":
      setTimeout(() => print({ type: "tick", ref: cmd.ref }), cmd.ms);
      break;
    case "exit":
      finish(0);
      break;
    default:
      print({ type: "fatal", message: `unknown op ${cmd.op}` });
  }
}

let buffered = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  buffered += chunk;
  let newline;
  while ((newline = buffered.indexOf("\n")) >= 0) {
    const line = buffered.slice(0, newline).trim();
    buffered = buffered.slice(newline + 1);
    if (!line) continue;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (err) {
      print({ type: "fatal", message: `bad command: ${err.message}` });
      continue;
    }
    handle(cmd).catch((err) => print({ type: "fatal", message: String(err && err.stack) }));
  }
});
process.stdin.on("end", () => finish(0));

// Never outlive the test that started us.
setTimeout(() => {
  print({ type: "fatal", message: "lifetime exceeded" });
  finish(3);
}, Number(lifetimeArg)).unref();

print({ type: "hello", parser: parserName, transport, node: process.version });
