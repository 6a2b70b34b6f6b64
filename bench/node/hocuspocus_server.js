// Hocuspocus (@hocuspocus/server 3.x) for the collaborative-documents comparison in bench/.
// Usage: node hocuspocus_server.js '{"port": N, "redis": {"host", "port", "prefix"}?,
//                                    "postgres": "postgresql://..."?, "maxSeconds": 3600?}'
//
// One process, no authentication (any token is accepted). With "redis", the official Redis
// extension links the processes that share it (under its key prefix). With "postgres", the
// official Database extension stores each document as one row of its whole Yjs state (table
// hocuspocus_documents, created by the benchmark), written with Hocuspocus' usual debounce
// (2 s after the last change, at most every 10 s), and loads it from there. GET / answers 200.
// Exits on SIGTERM, when stdin closes, or after maxSeconds, so that it never outlives the
// benchmark.
"use strict";
const { Server } = require("@hocuspocus/server");
const { Redis } = require("@hocuspocus/extension-redis");
const { Database } = require("@hocuspocus/extension-database");

const config = JSON.parse(process.argv[2] || "{}");
const extensions = [];
let pool = null;

if (config.redis) {
  extensions.push(
    new Redis({ host: config.redis.host, port: config.redis.port, prefix: config.redis.prefix }),
  );
}
if (config.postgres) {
  const { Pool } = require("pg");
  pool = new Pool({ connectionString: config.postgres, max: 4 });
  extensions.push(
    new Database({
      fetch: async ({ documentName }) => {
        const found = await pool.query("SELECT state FROM hocuspocus_documents WHERE name = $1", [
          documentName,
        ]);
        return found.rows.length ? found.rows[0].state : null;
      },
      store: async ({ documentName, state }) => {
        await pool.query(
          "INSERT INTO hocuspocus_documents (name, state, updated_at) VALUES ($1, $2, now()) " +
            "ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
          [documentName, state],
        );
      },
    }),
  );
}

const server = new Server({
  port: config.port,
  address: "127.0.0.1",
  quiet: true,
  stopOnSignals: false,
  extensions,
});

let stopping = false;
async function stop(code, why) {
  process.stderr.write(`hocuspocus: stopping (${why})\n`);
  if (stopping) return;
  stopping = true;
  setTimeout(() => process.exit(code), 5000).unref();
  try {
    await server.destroy();
    if (pool) await pool.end();
  } catch (err) {
    process.stderr.write(`hocuspocus: stopping: ${err && err.stack}\n`);
  }
  process.exit(code);
}

process.on("SIGTERM", () => stop(0, "SIGTERM"));
process.on("SIGINT", () => stop(0, "SIGINT"));
process.stdin.on("end", () => stop(0, "stdin closed"));
process.stdin.resume();
setTimeout(() => stop(3, "maxSeconds"), (config.maxSeconds || 3600) * 1000).unref();

// Not server.listen(): it passes `address` where Node's listen wants `host`, and so binds every
// interface. The extensions' onConfigure hooks ran in the constructor; nothing here needs onListen.
server.httpServer.once("error", (err) => {
  process.stderr.write(`hocuspocus: ${err && err.stack}\n`);
  process.exit(1);
});
server.httpServer.listen({ port: config.port, host: "127.0.0.1" }, () =>
  process.stdout.write(`hocuspocus listening on 127.0.0.1:${config.port}\n`),
);
