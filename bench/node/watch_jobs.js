// Watches many jobs, one socket.io-client connection per job, and reports update latency.
// Usage: node watch_jobs.js URL JOBS_JSON_FILE SECONDS
// JOBS_JSON_FILE: [{"id": "...", "token": "..."}, ...]. Prints "ready" once every socket has
// subscribed, then one JSON line of results when SECONDS have passed or every job finished.
const fs = require("fs");
const path = require("path");
const { io } = require(path.join(__dirname, "../../tests/protocol/node/node_modules/socket.io-client"));

const [url, file, seconds] = process.argv.slice(2);
const jobs = JSON.parse(fs.readFileSync(file, "utf8"));
const latencies = [];
let finished = 0;
let subscribed = 0;
let stale = 0;
const sockets = [];

function done() {
  latencies.sort((a, b) => a - b);
  const q = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : null);
  console.log(JSON.stringify({ updates: latencies.length, finished, stale, p50: q(0.5), p99: q(0.99), max: q(1) }));
  for (const s of sockets) s.close();
  process.exit(0);
}

for (const job of jobs) {
  const socket = io(url, { auth: { token: job.token }, transports: ["websocket"], reconnection: false });
  sockets.push(socket);
  let version = 0;
  socket.on("connect", async () => {
    const ack = await socket.timeout(20000).emitWithAck("subscribe", { channel: `job:${job.id}` });
    if (!ack.ok) { console.error(JSON.stringify(ack)); process.exit(2); }
    version = ack.state ? ack.state.version : 0;
    if (++subscribed === jobs.length) console.log("ready");
  });
  socket.onAny((type, envelope) => {
    if (!type.startsWith("job.")) return;
    const snapshot = envelope.data;
    if (snapshot.version <= version) { stale++; return; }
    version = snapshot.version;
    latencies.push(Date.now() - Date.parse(snapshot.updated_at));
    if (type === "job.completed" && ++finished === jobs.length) done();
  });
}
setTimeout(done, Number(seconds) * 1000);
