// Checkout pages for bench/checkout.py: one socket.io-client connection per job, subscribed to
// its own `job:<id>` channel with that job's watch token.
// Usage: node checkout_pages.js JOBS_JSON_FILE HARD_TIMEOUT_SECONDS
//
// JOBS_JSON_FILE: [{"id", "token", "slow"}, ...]. A slow page also subscribes to the filler
// channel and stops reading its websocket once subscribed (its server-side queue then fills
// and its job.progress frames coalesce). Prints "ready" once every page subscribed.
// stdin "resume": the slow pages read again. A JSON line {"expect": [last step per page],
// "within": s}: once every page saw its expected last step and every slow page the filler
// channel's "bench.end" (queued after all it missed), or after `within` seconds, one JSON line
// of results, and exit.
//
// Latency: every progress update's `message` is "t=<worker's send time, epoch ms>"; the page
// takes its own Date.now() minus it (same machine, same clock).
"use strict";
const fs = require("fs");
const readline = require("readline");
const { io } = require("socket.io-client");

const [file, hardTimeoutS] = process.argv.slice(2);
const jobs = JSON.parse(fs.readFileSync(file, "utf8"));
const FILLER = "room:checkout-filler";
const LOG_K = 1 / Math.log(1.01);
const hist = new Map(); // log bucket of latency in µs -> count (non-slow pages only)
let maxUs = 0;
let subscribed = 0;
let dropped = 0; // pages disconnected by the server (e.g. as slow)
const pages = [];

function record(ms) {
  const us = Math.max(1, ms * 1000);
  const bucket = Math.floor(Math.log(us) * LOG_K);
  hist.set(bucket, (hist.get(bucket) || 0) + 1);
  if (us > maxUs) maxUs = us;
}

function report() {
  for (const p of pages) p.closing = true;
  const cpu = process.cpuUsage();
  const out = { cpu_s: (cpu.user + cpu.system) / 1e6, pages: pages.length, subscribed, dropped, hist: [...hist], max_us: maxUs, seen: [] };
  // Per page: [slow, progress events received, last step seen, version of the last one]
  for (const p of pages) out.seen.push([p.slow ? 1 : 0, p.received, p.last]);
  process.stdout.write(JSON.stringify(out) + "\n");
  for (const p of pages) p.socket.close();
  process.exit(0);
}

for (const job of jobs) {
  const socket = io(process.env.CHECKOUT_URL, {
    auth: { token: job.token },
    transports: ["websocket"],
    forceNew: true,
    reconnection: false,
    timeout: 60000,
    perMessageDeflate: false,
  });
  const page = { socket, slow: !!job.slow, received: 0, last: 0, ended: false, closing: false };
  pages.push(page);
  socket.on("connect", async () => {
    const channels = page.slow ? [`job:${job.id}`, FILLER] : [`job:${job.id}`];
    for (const channel of channels) {
      const ack = await socket.timeout(60000).emitWithAck("subscribe", { channel });
      if (!ack.ok) {
        process.stderr.write(JSON.stringify(ack) + "\n");
        process.exit(2);
      }
    }
    // Stop reading: the kernel buffers fill, then the server queues and coalesces.
    if (page.slow) socket.io.engine.transport.ws.pause();
    if (++subscribed === jobs.length) process.stdout.write("ready\n");
  });
  socket.on("disconnect", (reason) => {
    if (!page.closing && reason !== "io client disconnect") dropped++;
  });
  socket.on("job.progress", (envelope) => {
    const data = envelope.data;
    page.received++;
    const step = Number(data.stage.slice(1)); // "s<step>"
    if (step > page.last) page.last = step;
    if (!page.slow) record(Date.now() - Number(data.message.slice(2)));
    check();
  });
  socket.on("bench.end", () => {
    page.ended = true;
    check();
  });
}

const lines = readline.createInterface({ input: process.stdin });
let expect = null;
function check() {
  if (expect === null) return;
  for (let i = 0; i < pages.length; i++) {
    const p = pages[i];
    if (p.last < expect[i] || (p.slow && !p.ended)) return;
  }
  report();
}
lines.on("line", (line) => {
  if (line === "resume") {
    for (const p of pages) if (p.slow) p.socket.io.engine.transport.ws.resume();
    process.stdout.write("resumed\n");
    return;
  }
  const command = JSON.parse(line);
  expect = command.expect;
  setTimeout(report, command.within * 1000);
  check();
});
lines.on("close", () => process.exit(0));
setTimeout(() => {
  process.stderr.write(`checkout_pages ${process.pid}: hard timeout\n`);
  report();
}, Number(hardTimeoutS) * 1000);
