// Node socket.io server with Tandem's event contract, for comparison in bench/.
// Usage: node server.js PORT [MAX_SECONDS]
// One process, in memory, no auth: `subscribe` {channel} joins the room; `publish`
// {channel, event, data} emits the envelope {channel, type, offset, epoch, ts, data} to the room;
// POST /api/publish does the same over HTTP, POST /api/publish/batch {publications} for many. Exits on SIGTERM, when stdin closes, or after
// MAX_SECONDS (default one hour) so that it never outlives the benchmark.
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
const maxSeconds = Number(process.argv[3] || 3600);
const EPOCH = "node";
const offsets = new Map();

function publish(channel, event, data) {
  const offset = (offsets.get(channel) || 0) + 1;
  offsets.set(channel, offset);
  const envelope = { channel, type: event, offset, epoch: EPOCH, ts: Date.now() / 1000, data };
  io.to(channel).emit(event, envelope);
  return offset;
}

function valid(req) {
  return req && typeof req.channel === "string" && typeof req.event === "string";
}

const httpServer = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/health") {
    res.end("ok");
    return;
  }
  const batch = req.url === "/api/publish/batch";
  if (req.method !== "POST" || (req.url !== "/api/publish" && !batch)) {
    res.writeHead(404).end();
    return;
  }
  let body = "";
  req.setEncoding("utf8");
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    let msg;
    try {
      msg = JSON.parse(body);
    } catch {
      msg = null;
    }
    const items = batch ? msg && msg.publications : [msg];
    if (!Array.isArray(items) || !items.every(valid)) {
      res.writeHead(422).end();
      return;
    }
    const results = items.map((item) => ({ offset: publish(item.channel, item.event, item.data), epoch: EPOCH, duplicate: false }));
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(batch ? { results } : results[0]));
  });
});

const io = new Server(httpServer, { cors: { origin: "*" } });
io.on("connection", (socket) => {
  socket.on("subscribe", (req, ack) => {
    if (typeof ack !== "function") return;
    if (!req || typeof req.channel !== "string") {
      ack({ ok: false, error: { code: "invalid_payload", message: "channel", retryable: false } });
      return;
    }
    socket.join(req.channel);
    const offset = offsets.get(req.channel) || 0;
    ack({ ok: true, channel: req.channel, epoch: EPOCH, offset, recovered: false, publications: [], state: null });
  });
  socket.on("publish", (req, ack) => {
    if (typeof ack !== "function") return;
    if (!valid(req)) {
      ack({ ok: false, error: { code: "invalid_payload", message: "channel, event", retryable: false } });
      return;
    }
    const offset = publish(req.channel, req.event, req.data);
    ack({ ok: true, offset, epoch: EPOCH, duplicate: false });
  });
});

httpServer.listen(port, "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), maxSeconds * 1000);
