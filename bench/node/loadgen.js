// Load generator worker for bench/ (driven by bench/loadgen.py).
// Usage: node loadgen.js HARD_TIMEOUT_SECONDS
//
// One process holds many socket.io-client connections (websocket only, one Engine.IO session
// each) that subscribe and record publish-to-deliver latency, and/or publishes at a given rate
// over the socket or over HTTP. Commands arrive as JSON lines on stdin, replies leave as JSON
// lines on stdout. The process always ends by itself: on stdin EOF, on {"cmd": "exit"}, or at
// the hard timeout (exit code 3).
//
// Latency: every publication's data carries {s: step, t: send time in ms}; the receiver takes
// its own clock minus t. Both clocks are performance.timeOrigin + performance.now() on the same
// machine. Latencies go into a log histogram (1 % wide buckets of microseconds) per step.
"use strict";
const http = require("http");
const readline = require("readline");
const { io } = require("socket.io-client");
const WebSocket = require("ws");

const hardTimeoutS = Number(process.argv[2] || 600);
setTimeout(() => {
  process.stderr.write(`loadgen ${process.pid}: hard timeout after ${hardTimeoutS}s\n`);
  process.exit(3);
}, hardTimeoutS * 1000);

const EVENT = "bench.msg";
const LOG_K = 1 / Math.log(1.01);
const now = () => performance.timeOrigin + performance.now();
const reply = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// -- subscribers ---------------------------------------------------------------------------

const subscribers = [];
const steps = new Map(); // step -> {received, first, last, maxUs, hist: Map(bucket -> count)}
let disorder = 0; // deliveries whose offset did not follow the previous one on that socket
let dropped = 0; // sockets disconnected by anything but us
let closing = false;

function stepStats(step) {
  let stats = steps.get(step);
  if (stats === undefined) {
    stats = { received: 0, first: Infinity, last: 0, maxUs: 0, hist: new Map() };
    steps.set(step, stats);
  }
  return stats;
}

function onMessage(position, envelope) {
  const t = now();
  const data = envelope.data;
  const stats = stepStats(data.s);
  stats.received++;
  const us = Math.max(1, (t - data.t) * 1000);
  const bucket = Math.floor(Math.log(us) * LOG_K);
  stats.hist.set(bucket, (stats.hist.get(bucket) || 0) + 1);
  if (us > stats.maxUs) stats.maxUs = us;
  if (t < stats.first) stats.first = t;
  if (t > stats.last) stats.last = t;
  if (envelope.epoch === position.epoch && envelope.offset <= position.offset) disorder++;
  position.epoch = envelope.epoch;
  position.offset = envelope.offset;
}

function socketOptions(spec, token) {
  return {
    transports: ["websocket"],
    forceNew: true, // one Engine.IO session per socket, not one shared Manager
    reconnection: false,
    timeout: 30000,
    auth: { token },
    // Browsers offer permessage-deflate; by default the benchmark measures uncompressed frames.
    perMessageDeflate: spec.deflate ? { threshold: 1024 } : false,
  };
}

function opened(socket) {
  return new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
}

function channelOf(spec, i) {
  return spec.prefix === undefined ? spec.channel : spec.prefix + (spec.start + i);
}

// A subscriber speaking Engine.IO 4 / Socket.IO 5 over `ws` directly (client "ws"): the same
// frames as socket.io-client, without its per-packet machinery (about a third less CPU per
// delivery in fan-out). Text packets only (the JSON serializer).
function rawSubscriber(spec, channel) {
  const url = spec.url.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket";
  const ws = new WebSocket(url, { perMessageDeflate: !!spec.deflate });
  const position = { epoch: null, offset: -1 };
  const socket = { close: () => ws.close() };
  let ready = false;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error("connect timeout")), 30000);
    const fail = (err) => {
      clearTimeout(timer);
      ws.terminate();
      reject(err);
    };
    ws.on("error", fail);
    ws.on("close", () => {
      if (ready && !closing) dropped++;
    });
    ws.on("message", (raw) => {
      const text = raw.toString();
      if (text.startsWith("42")) {
        const [type, envelope] = JSON.parse(text.slice(2));
        if (type === EVENT) onMessage(position, envelope);
      } else if (text === "2") {
        ws.send("3"); // pong
      } else if (text.startsWith("0{")) {
        ws.send("40" + JSON.stringify({ token: spec.token })); // Socket.IO connect, with auth
      } else if (text.startsWith("40")) {
        ws.send("420" + JSON.stringify(["subscribe", { channel }])); // ack id 0
      } else if (text.startsWith("430")) {
        const [ack] = JSON.parse(text.slice(3));
        if (!ack || !ack.ok) fail(new Error(`subscribe refused: ${JSON.stringify(ack && ack.error)}`));
        else {
          clearTimeout(timer);
          ready = true;
          resolve(socket);
        }
      } else if (text.startsWith("44")) {
        fail(new Error(`connect refused: ${text.slice(2, 200)}`));
      }
    });
  });
}

// {cmd: "subscribe", url, token, count, channel | prefix+start, concurrency, deflate, client}
async function subscribe(spec) {
  let next = 0;
  let ok = 0;
  const errors = {};
  async function one(i) {
    if (spec.client === "ws") {
      subscribers.push(await rawSubscriber(spec, channelOf(spec, i)));
      return;
    }
    const socket = io(spec.url, socketOptions(spec, spec.token));
    const position = { epoch: null, offset: -1 };
    socket.on(EVENT, (envelope) => onMessage(position, envelope));
    socket.on("disconnect", () => {
      if (!closing) dropped++;
    });
    try {
      await opened(socket);
      const ack = await socket.timeout(30000).emitWithAck("subscribe", { channel: channelOf(spec, i) });
      if (!ack || !ack.ok) throw new Error(`subscribe refused: ${JSON.stringify(ack && ack.error)}`);
    } catch (err) {
      socket.close();
      throw err;
    }
    subscribers.push(socket);
  }
  async function lane() {
    while (next < spec.count) {
      const i = next++;
      try {
        await one(i);
        ok++;
      } catch (err) {
        const key = String(err && err.message).slice(0, 200);
        errors[key] = (errors[key] || 0) + 1;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(spec.concurrency || 100, spec.count) }, lane));
  reply({ ev: "subscribed", ok, failed: spec.count - ok, errors });
}

function counts(cmd) {
  const stats = steps.get(cmd.step);
  return { ev: "count", received: stats ? stats.received : 0, disorder, dropped, sockets: subscribers.length };
}

function stats(cmd) {
  const s = steps.get(cmd.step) || stepStats(cmd.step);
  return {
    ev: "stats",
    received: s.received,
    first: s.received ? s.first : null,
    last: s.received ? s.last : null,
    max_us: s.maxUs,
    hist: Array.from(s.hist.entries()),
    disorder,
    dropped,
  };
}

// -- publisher -----------------------------------------------------------------------------

const publishers = [];
let target = null; // {url, apiKey, mode}
let agent = null;

// {cmd: "publishers", urls, token, count, mode: "socket" | "http" | "batch", apiKey, deflate}
// Publisher sockets, and HTTP requests, take the nodes in turn (what a load balancer does).
let nextUrl = 0;
const urlOf = () => target.urls[nextUrl++ % target.urls.length];

async function openPublishers(spec) {
  target = spec;
  if (spec.mode !== "socket") {
    agent = new http.Agent({ keepAlive: true, maxSockets: spec.count });
  } else {
    for (let i = 0; i < spec.count; i++) {
      const socket = io(urlOf(), socketOptions(spec, spec.token));
      await opened(socket);
      publishers.push(socket);
    }
  }
  reply({ ev: "publishers", ok: spec.mode === "socket" ? publishers.length : spec.count });
}

function httpPublish(body, path = "/api/publish") {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      urlOf() + path,
      {
        method: "POST",
        agent,
        headers: {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(payload),
          authorization: `Bearer ${target.apiKey}`,
        },
      },
      (res) => {
        res.resume();
        res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`http ${res.statusCode}`))));
      },
    );
    req.on("error", reject);
    req.setTimeout(30000, () => req.destroy(new Error("http timeout")));
    req.end(payload);
  });
}

async function socketPublish(socket, body) {
  const ack = await socket.timeout(30000).emitWithAck("publish", body);
  if (!ack || !ack.ok) throw new Error(`publish refused: ${JSON.stringify(ack && ack.error)}`);
}

// {cmd: "run", step, rate, duration, count, channel | prefix+start, pad, maxInflight, batch}
// Open loop: publication k is due at start + k / rate; sends what is due every millisecond.
// In "batch" mode what is due in one millisecond goes in POST /api/publish/batch requests of at
// most `batch` publications (what a worker reporting many jobs would do).
async function run(cmd) {
  const total = Math.max(1, Math.round(cmd.rate * cmd.duration));
  const start = now();
  let sent = 0;
  let acked = 0;
  let inflight = 0;
  let lastSend = start;
  const errors = {};
  let settle;
  const settled = new Promise((resolve) => (settle = resolve));
  const finish = () => {
    if (sent === total && inflight === 0) settle();
  };
  const bodyOf = (k) => ({ channel: channelOf(cmd, k % cmd.count), event: EVENT, data: { s: cmd.step, t: now(), k, pad: cmd.pad } });
  function track(done, n) {
    inflight += n;
    done
      .then(() => (acked += n))
      .catch((err) => {
        const key = String(err && err.message).slice(0, 200);
        errors[key] = (errors[key] || 0) + n;
      })
      .finally(() => {
        inflight -= n;
        finish();
      });
  }
  function publishOne(k) {
    const body = bodyOf(k);
    track(target.mode === "http" ? httpPublish(body) : socketPublish(publishers[k % publishers.length], body), 1);
  }
  const batchSize = cmd.batch || 100;
  await new Promise((resolve) => {
    function tick() {
      const due = Math.min(total, Math.floor(((now() - start) / 1000) * cmd.rate) + 1);
      if (target.mode === "batch") {
        while (sent < due && inflight < cmd.maxInflight) {
          const items = [];
          while (sent < due && items.length < batchSize) items.push(bodyOf(sent++));
          track(httpPublish({ publications: items }, "/api/publish/batch"), items.length);
          lastSend = now();
        }
      }
      while (sent < due && inflight < cmd.maxInflight) {
        publishOne(sent++);
        lastSend = now();
      }
      if (sent >= total) resolve();
      else setTimeout(tick, 1);
    }
    tick();
  });
  finish();
  await Promise.race([settled, new Promise((resolve) => setTimeout(resolve, 30000))]);
  reply({ ev: "ran", sent, acked, inflight, errors, first: start, last: lastSend });
}

// -- commands ------------------------------------------------------------------------------

function exit() {
  closing = true;
  for (const socket of subscribers.concat(publishers)) socket.close();
  if (agent) agent.destroy();
  setTimeout(() => process.exit(0), 100);
}

const handlers = {
  subscribe,
  publishers: openPublishers,
  run,
  count: async (cmd) => reply(counts(cmd)),
  stats: async (cmd) => reply(stats(cmd)),
  exit: async () => exit(),
};

// Commands run one at a time, in order.
let queue = Promise.resolve();
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = JSON.parse(line);
  queue = queue.then(() =>
    handlers[cmd.cmd](cmd).catch((err) => reply({ ev: "error", message: String(err && err.stack) })),
  );
});
process.stdin.on("end", exit);
