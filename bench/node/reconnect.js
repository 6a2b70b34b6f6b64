// Reconnect-storm worker for bench/reconnect.py. Usage: node reconnect.js HARD_TIMEOUT_SECONDS
//
// Holds many socket.io-client connections (websocket only), each subscribed to K channels in
// one `subscribe_many`, and keeps every channel's {epoch, offset}. When the server goes away
// (a server.notice and a disconnect, or just a dropped transport) each client comes back after
// the notice's retry_after_ms plus up to 250 ms of jitter (as tandem.js does), then with
// socket.io-client's reconnection backoff (1 s doubling to 5 s, +/-50 %) while the node is down
// or still draining (it refuses connections with `shutdown` then), and re-subscribes all K
// channels in one `subscribe_many` with their positions. A client is recovered once every
// channel's ack came back `recovered: true`; its recovery time is taken then. Subscriptions
// refused, channels not recovered, publications out of order or missing are counted, and
// connections refused apart from them.
//
// Same line protocol as loadgen.js: JSON commands on stdin, one JSON reply line each on
// stdout; the process ends on stdin EOF, {"cmd": "exit"}, or the hard timeout (exit code 3).
"use strict";
const readline = require("readline");
const { io } = require("socket.io-client");

const hardTimeoutS = Number(process.argv[2] || 600);
setTimeout(() => {
  process.stderr.write(`reconnect ${process.pid}: hard timeout after ${hardTimeoutS}s\n`);
  process.exit(3);
}, hardTimeoutS * 1000);

const EVENT = "bench.msg";
const now = () => performance.timeOrigin + performance.now(); // ms since the epoch
const reply = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const clients = [];
let closing = false;
const counts = {
  refused: {}, // error code -> subscriptions (or whole batches) refused
  connectRefused: {}, // error code -> connection attempts refused (CONNECT_ERROR)
  unrecovered: 0, // channels answered recovered: false after a reconnect
  disorder: 0, // publications not right after the previous one of their channel
  reconnects: 0, // connection attempts after the first connection
  received: 0,
};

function refuse(code, n = 1) {
  counts.refused[code] = (counts.refused[code] || 0) + n;
}

function channelsOf(spec, i) {
  const names = [];
  for (let j = 0; j < spec.channels; j++) names.push(`${spec.prefix}${(i * spec.channels + j) % spec.pool}`);
  return names;
}

// Publications of channels already subscribed again may come before the batch's ack (the
// server answers once, after the last channel): they wait for it, as in tandem.js and the SDK.
function onMessage(client, envelope) {
  if (client.pending) return client.pending.push(envelope);
  const p = client.positions.get(envelope.channel);
  if (!p) return;
  counts.received++;
  if (p.epoch === envelope.epoch && envelope.offset !== p.offset + 1) counts.disorder++;
  p.epoch = envelope.epoch;
  p.offset = envelope.offset;
}

// One subscribe_many for all of the client's channels, with positions once it has them.
async function subscribeAll(client) {
  const subscriptions = client.channels.map((channel) => {
    const p = client.positions.get(channel);
    return p.epoch === null ? { channel } : { channel, since: { epoch: p.epoch, offset: p.offset } };
  });
  client.pending = [];
  let ack;
  try {
    ack = await client.socket.timeout(60000).emitWithAck("subscribe_many", { subscriptions });
  } catch (err) {
    client.pending = null;
    throw err;
  }
  const pending = client.pending;
  client.pending = null;
  if (!ack || !ack.ok) {
    refuse((ack && ack.error && ack.error.code) || "bad_ack");
    return false;
  }
  let ok = true;
  ack.results.forEach((result, j) => {
    const channel = client.channels[j];
    if (!result.ok) {
      refuse(result.error.code);
      ok = false;
      return;
    }
    const p = client.positions.get(channel);
    if (p.epoch !== null && !result.recovered) {
      counts.unrecovered++;
      ok = false;
    }
    if (p.epoch === null || !result.recovered) {
      p.epoch = result.epoch;
      p.offset = result.offset;
    }
    for (const envelope of result.publications) onMessage(client, envelope);
  });
  for (const envelope of pending) onMessage(client, envelope);
  return ok;
}

function reconnectLater(client, delayMs) {
  clearTimeout(client.timer);
  client.timer = setTimeout(() => {
    if (closing || client.socket.connected) return;
    counts.reconnects++;
    client.socket.connect();
  }, delayMs);
}

function backoff(attempt) {
  const base = Math.min(5000, 1000 * 2 ** attempt);
  return base * (0.5 + Math.random());
}

function hold(spec, i) {
  const socket = io(spec.url, {
    transports: ["websocket"],
    forceNew: true,
    reconnection: false, // reconnected here, as tandem.js does after a server disconnect
    timeout: 30000,
    auth: { token: spec.token },
  });
  const client = { socket, channels: channelsOf(spec, i), positions: new Map(), attempt: 0 };
  client.channels.forEach((c) => client.positions.set(c, { epoch: null, offset: -1 }));
  client.downAt = null;
  client.recoveredAt = null;
  socket.on(EVENT, (envelope) => onMessage(client, envelope));
  socket.on("server.notice", (notice) => (client.notice = notice));
  socket.on("disconnect", () => {
    if (closing) return;
    if (client.downAt === null) client.downAt = now();
    client.recoveredAt = null;
    const notice = client.notice || { retry_after_ms: 0 };
    client.notice = null;
    client.attempt = 0;
    reconnectLater(client, (notice.retry_after_ms || 0) + Math.random() * 250);
  });
  socket.on("connect_error", (error) => {
    if (closing || client.downAt === null) return; // the first connection reports itself
    const code = error && error.data && error.data.code;
    if (code) counts.connectRefused[code] = (counts.connectRefused[code] || 0) + 1;
    reconnectLater(client, backoff(client.attempt++));
  });
  socket.on("connect", () => {
    if (client.downAt === null) return; // the first connection: hold() subscribes
    subscribeAll(client).then(
      (ok) => {
        if (ok) client.recoveredAt = now();
      },
      () => refuse("subscribe_timeout"),
    );
  });
  return client;
}

// {cmd: "hold", url, token, start, count, channels, pool, prefix, concurrency}
async function holdAll(spec) {
  let next = 0;
  let ok = 0;
  const errors = {};
  async function one(i) {
    const client = hold(spec, i);
    try {
      await new Promise((resolve, reject) => {
        client.socket.once("connect", resolve);
        client.socket.once("connect_error", reject);
      });
      if (!(await subscribeAll(client))) throw new Error("subscribe_many refused");
    } catch (err) {
      client.socket.close();
      throw err;
    }
    clients.push(client);
  }
  async function lane() {
    while (next < spec.count) {
      const i = spec.start + next++;
      try {
        await one(i);
        ok++;
      } catch (err) {
        const key = String(err && err.message).slice(0, 200);
        errors[key] = (errors[key] || 0) + 1;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(spec.concurrency || 50, spec.count) }, lane));
  reply({ ev: "held", ok, failed: spec.count - ok, errors });
}

// How far along: clients connected and recovered, and the counters.
function status() {
  let connected = 0;
  let recovered = 0;
  for (const c of clients) {
    if (c.socket.connected) connected++;
    if (c.recoveredAt !== null) recovered++;
  }
  reply({ ev: "status", clients: clients.length, connected, recovered, ...counts });
}

// {cmd: "report", expected: {channel: last offset}}: every client's recovery time (ms since
// the epoch, null if not recovered) and the channels whose position is not the last offset.
function report(cmd) {
  let missing = 0;
  for (const c of clients) {
    for (const [channel, p] of c.positions) {
      if (p.offset !== cmd.expected[channel]) missing++;
    }
  }
  reply({
    ev: "report",
    down: clients.map((c) => c.downAt),
    recovered: clients.map((c) => c.recoveredAt),
    missing,
    ...counts,
  });
}

function exit() {
  closing = true;
  for (const c of clients) {
    clearTimeout(c.timer);
    c.socket.close();
  }
  setTimeout(() => process.exit(0), 100);
}

const handlers = {
  hold: holdAll,
  status: async () => status(),
  report: async (cmd) => report(cmd),
  exit: async () => exit(),
};

let queue = Promise.resolve();
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = JSON.parse(line);
  queue = queue.then(() =>
    handlers[cmd.cmd](cmd).catch((err) => reply({ ev: "error", message: String(err && err.stack) })),
  );
});
process.stdin.on("end", exit);
