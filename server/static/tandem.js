/*
 * tandem.js: a small browser helper for Tandem channels (plain script, no build step). Load the
 * vendored socket.io-client first (/static/vendor/socket.io.min.js); this defines `Tandem`:
 *
 *   const client = Tandem.connect("", { token });  // "" = this page's origin
 *   client.subscribe("room:lobby", (envelope) => ..., { onState: (state) => ... });
 *   Tandem.watchJob(jobId, watchToken, { onUpdate: (job, via) => ... });
 *   Tandem.watchInbox(client, userId, { onChange: (inbox) => ... });  // unread + latest
 *   Tandem.watchFlight(client, flightId, { onUpdate: (flight, envelope) => ... });
 *
 * Delivery (DESIGN section 5): it keeps each channel's last {epoch, offset}, re-subscribes with
 * `since` after every reconnect, drops what it already delivered, and calls onState(state, ack)
 * whenever the server could not replay a gap (`recovered: false`, also the answer to a first
 * subscribe). `token` may be a function (sync or async) called on every (re)connect.
 *
 * Subscribing many channels: after a reconnect every channel goes back in `subscribe_many`
 * requests of at most 100 (one ack each), as do the subscribe() calls made in one go (the same
 * task), so a page holding many channels is not refused `rate_limited`. A server without
 * `subscribe_many` gets one `subscribe` each.
 */
(function (global) {
  "use strict";

  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  // Refusals worth retrying even when the server did not mark them retryable.
  const TRANSIENT = new Set(["shutdown", "broker_unavailable", "rate_limited", "internal"]);
  const MAX_BATCH = 100; // subscriptions the server takes in one subscribe_many
  const NO_ANSWER = { ok: false, error: { code: "timeout", message: "no answer", retryable: true } };
  const noop = () => {};
  const retryDelay = (attempt) => Math.min(1000 * 2 ** attempt, 10000);

  class Client {
    constructor(url, { token, onConnection = noop, onError = noop, socketOptions = {} } = {}) {
      this._subs = new Map(); // channel -> {channel, onMessage, onState, onError, position, ...}
      this._token = token;
      this._onConnection = onConnection; // (connected|reconnecting|offline|closed, detail)
      this._onError = onError; // ({code, message, retryable})
      this._notice = null; // the last server.notice: why the server is about to disconnect us
      this._timer = null;
      this._paused = false; // we disconnected because the browser went offline
      this._closed = false;
      this._queued = []; // subscribe() calls of this task, sent together at its end
      this._single = null; // the socket id of a connection whose server lacks subscribe_many
      const socket = (this.socket = global.io(url, {
        transports: ["websocket", "polling"],
        auth: (cb) =>
          Promise.resolve(typeof token === "function" ? token() : token).then(
            // A reconnect starts with the reported status, so the others see no flapping.
            (value) => cb(this._status ? { token: value, status: this._status } : { token: value }),
            (error) => (this._onError({ code: "unauthorized", message: String(error) }), cb({})),
          ),
        ...socketOptions,
      }));
      socket.on("connect", () => {
        this._notice = null;
        this._onConnection("connected");
        this._queued = [];
        this._sendAll([...this._subs.values()]);
      });
      socket.on("disconnect", (reason) => this._disconnected(reason));
      socket.on("connect_error", (error) => this._refused(error));
      socket.on("server.notice", (notice) => this._noticed(notice));
      socket.onAny((event, envelope) => this._publication(envelope));
      // A dead network may show only as missed pings (~45 s); the browser often knows sooner.
      this._offline = () => {
        if (this._closed) return;
        this._paused = true;
        clearTimeout(this._timer);
        if (socket.active) socket.disconnect();
        this._onConnection("offline");
      };
      this._online = () => {
        if (!this._paused || this._closed) return;
        this._paused = false;
        socket.connect();
      };
      global.addEventListener("offline", this._offline);
      global.addEventListener("online", this._online);
    }

    // A notice naming a channel ended that subscription (unsubscribed_by_admin): it is not
    // resubscribed on reconnect. Any other is about the connection about to close.
    _noticed(notice) {
      if (!notice || typeof notice.channel !== "string") {
        this._notice = notice;
        return;
      }
      const sub = this._subs.get(notice.channel);
      if (!sub) return;
      this._subs.delete(notice.channel);
      sub.onError(notice);
    }

    get connected() {
      return this.socket.connected;
    }

    // Returns {channel, position, live, recovered, unsubscribe()}; `live`: the ack is applied, no
    // gap open; `recovered`: the last (re)subscribe replayed what was missed (null before one).
    // presence: true makes this connection a visible member (doc:, room:, user:) while subscribed.
    subscribe(channel, onMessage, { onState = noop, onError = this._onError, presence = false } = {}) {
      if (this._subs.has(channel)) throw new Error(`already subscribed to ${channel}`);
      const sub = { channel, onMessage, onState, onError, position: null, ready: false, buffer: [] };
      sub.recovered = null;
      if (presence) sub.presence = true;
      this._subs.set(channel, sub);
      if (this.socket.connected && this._queued.push(sub) === 1) {
        queueMicrotask(() => this._sendAll(this._queued.splice(0).filter((s) => this._current(s))));
      }
      return {
        channel,
        unsubscribe: () => this.unsubscribe(channel),
        get position() { return sub.position; },
        get live() { return sub.ready; },
        get recovered() { return sub.recovered; },
      };
    }

    unsubscribe(channel) {
      if (this._subs.delete(channel) && this.socket.connected) {
        this.socket.emit("unsubscribe", { channel });
      }
    }

    // Report this tab's status: "online", "away" (idle) or "busy". Resolves to the user's combined
    // status (busy if any connection says so, else online if any is active, else away).
    setStatus(status) {
      this._status = status === "online" ? null : status;
      return this._request("status", { status }).then((ack) => ack.status);
    }

    // Tell a subscribed doc:/room: channel that the user types (renew every ~2 s) or stopped.
    // See Tandem.typingNotifier for keystroke-driven renewal.
    typing(channel, typing = true) {
      return this._request("typing", { channel, typing });
    }

    // Resolves to the ack, or rejects with its error {code, message, retryable}.
    _request(event, payload, timeoutMs = 10000) {
      return new Promise((resolve, reject) => {
        this.socket.timeout(timeoutMs).emit(event, payload, (timeout, ack) => {
          if (timeout) reject({ code: "timeout", message: "no answer", retryable: true });
          else if (!ack.ok) reject(ack.error);
          else resolve(ack);
        });
      });
    }

    close() {
      this._closed = true;
      clearTimeout(this._timer);
      global.removeEventListener("offline", this._offline);
      global.removeEventListener("online", this._online);
      this._subs.clear();
      this.socket.disconnect();
      this._onConnection("closed");
    }

    // `sub` is still wanted, on the connection `socket`/`sid` if given (else the current one).
    _current(sub, socket = this.socket, sid = socket.id) {
      return this._subs.get(sub.channel) === sub && socket.connected && socket.id === sid;
    }

    // The subscribe request of `sub` (with its position); live publications wait in sub.buffer
    // until its ack is applied.
    _subscription(sub) {
      sub.ready = false;
      sub.buffer = [];
      const request = { channel: sub.channel };
      if (sub.position) request.since = sub.position;
      if (sub.presence) request.presence = true;
      return request;
    }

    _send(sub, attempt = 0) {
      const socket = this.socket;
      const sid = socket.id;
      // An ack is stale once we unsubscribed or reconnected (the connect handler sent anew).
      socket.timeout(10000).emit("subscribe", this._subscription(sub), (timeout, ack) => {
        if (this._current(sub, socket, sid)) this._settle(sub, timeout ? NO_ANSWER : ack, attempt);
      });
    }

    // (Re)subscribe `subs` in subscribe_many requests of at most MAX_BATCH channels.
    _sendAll(subs) {
      if (subs.length === 1) return this._send(subs[0]);
      for (let i = 0; i < subs.length; i += MAX_BATCH) this._sendBatch(subs.slice(i, i + MAX_BATCH));
    }

    _sendBatch(subs, attempt = 0) {
      const socket = this.socket;
      const sid = socket.id;
      if (this._single === sid) return subs.forEach((sub) => this._send(sub));
      const subscriptions = subs.map((sub) => this._subscription(sub));
      socket.timeout(10000).emit("subscribe_many", { subscriptions }, (timeout, ack) => {
        const wanted = subs.filter((sub) => this._current(sub, socket, sid));
        if (!timeout && ack.ok && Array.isArray(ack.results) && ack.results.length === subs.length) {
          // Each item is what its own subscribe would have answered.
          subs.forEach((sub, i) => wanted.includes(sub) && this._settle(sub, ack.results[i], 0));
          return;
        }
        if (!wanted.length) return;
        const error = (timeout ? NO_ANSWER : ack).error || { code: "internal", message: "bad ack" };
        if (error.code === "invalid_payload" && /^unknown event/.test(error.message)) {
          this._single = sid; // an older server: one subscribe each
          return wanted.forEach((sub) => this._send(sub));
        }
        if (!(error.retryable || TRANSIENT.has(error.code))) {
          return wanted.forEach((sub) => this._send(sub)); // each gets its own answer
        }
        for (const sub of wanted) sub.onError({ channel: sub.channel, ...error });
        setTimeout(() => {
          const still = wanted.filter((sub) => this._current(sub, socket, sid));
          if (still.length) this._sendBatch(still, attempt + 1);
        }, retryDelay(attempt));
      });
    }

    // Apply one subscribe ack to `sub`, or report its error (retried when it says so).
    _settle(sub, ack, attempt) {
      if (!ack.ok) {
        sub.onError({ channel: sub.channel, ...ack.error });
        if (!ack.error.retryable) return;
        const socket = this.socket;
        const sid = socket.id;
        setTimeout(() => this._current(sub, socket, sid) && this._send(sub, attempt + 1), retryDelay(attempt));
        return;
      }
      sub.recovered = Boolean(ack.recovered);
      if (!ack.recovered) {
        sub.position = null; // the gap cannot be replayed (or is everything): start from state
        sub.onState(ack.state, ack);
      }
      for (const envelope of ack.publications) this._deliver(sub, envelope);
      const p = sub.position;
      if (!p || p.epoch !== ack.epoch || p.offset < ack.offset) {
        sub.position = { epoch: ack.epoch, offset: ack.offset };
      }
      sub.ready = true;
      for (const envelope of sub.buffer.splice(0)) this._deliver(sub, envelope);
    }

    _publication(envelope) {
      const sub = envelope && this._subs.get(envelope.channel);
      if (!sub || typeof envelope.offset !== "number") return;
      if (sub.ready) this._deliver(sub, envelope);
      else sub.buffer.push(envelope);
    }

    _deliver(sub, envelope) {
      const p = sub.position;
      if (p && envelope.epoch === p.epoch && envelope.offset <= p.offset) return; // seen it
      sub.position = { epoch: envelope.epoch, offset: envelope.offset };
      try {
        sub.onMessage(envelope);
      } catch (error) {
        console.error("tandem.js: onMessage failed", error);
      }
    }

    _disconnected(reason) {
      for (const sub of this._subs.values()) sub.ready = false;
      if (this._closed || this._paused) return;
      if (reason === "io client disconnect") return this._onConnection("closed", { reason });
      // Lost transports are retried by socket.io-client itself.
      if (reason !== "io server disconnect") return this._onConnection("reconnecting", { reason });
      // The server ended the session on purpose, after a server.notice saying why. socket.io-client
      // never retries a server-side disconnect, so we do, when and if the notice says so.
      const notice = this._notice || { code: "closed", reconnect: true, retry_after_ms: 1000 };
      if (!notice.reconnect) {
        this._onError(notice);
        return this._onConnection("closed", notice);
      }
      this._onConnection("reconnecting", notice);
      this._later(notice.retry_after_ms + Math.random() * 250);
    }

    _refused(error) {
      // A CONNECT_ERROR from the server (data: {code, message, retryable}) is not retried by
      // socket.io-client (socket.active turns false; transport errors keep it true): retry the
      // transient ones here, and an expired token only when `token` can produce a fresh one.
      if (this.socket.active || this._closed) return;
      const data = error.data || { code: "unauthorized", message: error.message };
      this._onError(data);
      const fresh = data.code === "token_expired" && typeof this._token === "function";
      if (!(data.retryable || TRANSIENT.has(data.code) || fresh)) {
        return this._onConnection("closed", data);
      }
      this._onConnection("reconnecting", data);
      this._later(1000 + Math.random() * 1000);
    }

    _later(delayMs) {
      clearTimeout(this._timer);
      this._timer = setTimeout(() => {
        if (!this._closed && !this._paused && !this.socket.connected) this.socket.connect();
      }, Math.max(0, delayMs));
    }
  }

  // Watch one job. Snapshots come over the socket and, while it is not live, from polling
  // GET /api/jobs/{id}; they apply by `version`, so a stale one never replaces a newer one.
  // onUpdate(job, via): via is "state" (subscribe), "socket" or "poll". Stops at a final state.
  function watchJob(jobId, token, { onUpdate, onConnection, onError, url = "", pollMs = 3000 }) {
    let version = 0;
    let finished = false;
    const apply = (job, via) => {
      if (finished || !job || typeof job.version !== "number" || job.version <= version) return;
      version = job.version;
      if (TERMINAL.has(job.status)) stop();
      onUpdate(job, via);
    };
    const client = new Client(url, { token, onConnection, onError });
    const subscription = client.subscribe(
      `job:${jobId}`,
      (envelope) => apply(envelope.data, "socket"),
      { onState: (state) => apply(state, "state") },
    );
    const poll = async () => {
      if (finished || subscription.live) return;
      try {
        const bearer = typeof token === "function" ? await token() : token;
        const response = await fetch(`${url}/api/jobs/${encodeURIComponent(jobId)}`, {
          headers: { Authorization: `Bearer ${bearer}` },
          cache: "no-store",
        });
        if (response.ok) apply(await response.json(), "poll");
      } catch (_) {
        // still offline: the next tick tries again
      }
    };
    const timer = setInterval(poll, pollMs);
    global.addEventListener("online", poll);
    function stop() {
      finished = true;
      clearInterval(timer);
      global.removeEventListener("online", poll);
      client.close();
    }
    return { client, stop, get version() { return version; } };
  }

  // Follow a user's inbox on user:<id>. The subscribe state is {unread, latest} (everything
  // unread survives any time offline); notification.created / notification.read keep both.
  // onChange(inbox, envelope) gets {user, unread, latest} (envelope null after a state).
  // markRead(ids) (no ids: all) posts over HTTP with the client's token; `unread` itself
  // changes only from the stream, in order, so a slow HTTP answer never overwrites a newer count.
  // The channel also carries the user's job.* events: those go to onOther(envelope).
  function watchInbox(client, user, { onChange = noop, onOther = noop, keep = 20, url = "" } = {}) {
    const inbox = { user, unread: 0, latest: [] };
    const apply = (envelope) => {
      const data = envelope.data || {};
      if (!envelope.type.startsWith("notification.") || typeof data.unread !== "number") {
        return onOther(envelope);
      }
      if (envelope.type === "notification.created") {
        const { unread, ...notification } = data;
        inbox.latest = [notification, ...inbox.latest.filter((n) => n.id !== data.id)];
        inbox.latest.length = Math.min(inbox.latest.length, keep);
      } else if (envelope.type === "notification.read") {
        const ids = new Set(data.ids || []);
        const at = new Date(envelope.ts * 1000).toISOString();
        inbox.latest = inbox.latest.map((n) =>
          ids.has(n.id) && !n.read_at ? { ...n, read_at: at } : n,
        );
      } else return onOther(envelope);
      inbox.unread = data.unread;
      onChange(inbox, envelope);
    };
    const subscription = client.subscribe(`user:${user}`, apply, {
      onState: (state) => {
        inbox.unread = (state && state.unread) || 0;
        inbox.latest = ((state && state.latest) || []).slice(0, keep);
        onChange(inbox, null);
      },
    });
    async function markRead(ids) {
      const token = client._token;
      const bearer = typeof token === "function" ? await token() : token;
      const response = await fetch(`${url}/api/notifications/read`, {
        method: "POST",
        headers: { Authorization: `Bearer ${bearer}`, "Content-Type": "application/json" },
        body: JSON.stringify(ids ? { ids } : { all: true }),
      });
      const body = await response.json();
      if (!response.ok) {
        const error = body.error || { code: "internal", message: response.statusText };
        throw Object.assign(new Error(error.message), error);
      }
      return body.unread;
    }
    return { inbox, subscription, markRead, stop: () => subscription.unsubscribe() };
  }

  // The next state of a flight given one of its events: flight.updated carries the whole
  // snapshot (plus `changes`), flight.position only {id, position, version, ...}. An event
  // not newer than `flight` (by version) returns `flight` itself: nothing goes backwards.
  function applyFlight(flight, envelope) {
    const data = envelope && envelope.data;
    if (!data || typeof data.version !== "number" || (flight && data.version <= flight.version)) {
      return flight;
    }
    if (envelope.type === "flight.updated") {
      const { changes, ...snapshot } = data;
      return snapshot;
    }
    if (envelope.type === "flight.position" && flight) {
      const { position, version, provider_ts, updated_at } = data;
      return { ...flight, position, version, provider_ts, updated_at };
    }
    return flight;
  }

  // Follow one flight: onUpdate(flight, envelope) with each newer state (envelope null for the
  // subscribe state). Returns {subscription, stop(), flight}.
  function watchFlight(client, flightId, { onUpdate = noop } = {}) {
    let flight = null;
    const subscription = client.subscribe(
      `flight:${flightId}`,
      (envelope) => {
        const next = applyFlight(flight, envelope);
        if (next !== flight) onUpdate((flight = next), envelope);
      },
      {
        onState: (state) => {
          if (!state || typeof state.version !== "number") return; // no such flight (yet)
          if (flight && state.version < flight.version) return;
          onUpdate((flight = state), null);
        },
      },
    );
    return { subscription, stop: () => subscription.unsubscribe(), get flight() { return flight; } };
  }

  // Keystroke-driven typing on one channel: call input() on each keystroke and stop() when the
  // message is sent. Sends typing:true at most every renewMs while keys come, typing:false after
  // idleMs without one (the server also clears it 5 s after the last renewal, or if we vanish).
  function typingNotifier(client, channel, { renewMs = 2000, idleMs = 3000 } = {}) {
    let sent = 0; // Date.now() of the last typing:true; 0 while not typing
    let idle = null;
    const send = (typing) => client.typing(channel, typing).catch(noop); // limits: next time
    const stop = () => {
      clearTimeout(idle);
      if (sent) send(false);
      sent = 0;
    };
    const input = () => {
      clearTimeout(idle);
      idle = setTimeout(stop, idleMs);
      if (Date.now() - sent >= renewMs) {
        sent = Date.now();
        send(true);
      }
    };
    return { input, stop };
  }

  // Who is typing on a channel, from its presence.typing envelopes: feed handle(envelope) with
  // every envelope of the channel; onChange([{user, name}]) on each change. An indicator also
  // ends timeout_ms after its last typing:true, in case the typing user's node died.
  function typingTracker(onChange, { self = null } = {}) {
    const typers = new Map(); // user -> {name, timer}
    const changed = () =>
      onChange([...typers].map(([user, { name }]) => ({ user, name })));
    const drop = (user) => {
      const typer = typers.get(user);
      if (!typer) return;
      clearTimeout(typer.timer);
      typers.delete(user);
      changed();
    };
    const handle = (envelope) => {
      const data = envelope && envelope.data;
      if (!data || data.user === self) return;
      if (envelope.type === "presence.leave") return drop(data.user);
      if (envelope.type !== "presence.typing") return;
      if (!data.typing) return drop(data.user);
      const known = typers.get(data.user);
      if (known) clearTimeout(known.timer);
      const timer = setTimeout(() => drop(data.user), data.timeout_ms || 5000);
      typers.set(data.user, { name: data.name, timer });
      if (!known) changed();
    };
    return { handle, get users() { return [...typers.keys()]; } };
  }

  // Report "away" after idleMs without keyboard, pointer or focus activity (or while the tab is
  // hidden), and "online" again on the next activity. stop() removes the listeners.
  function idleStatus(client, { idleMs = 60000 } = {}) {
    const doc = global.document;
    const events = ["keydown", "pointerdown", "pointermove", "wheel", "focus"];
    let away = false;
    let timer = null;
    const report = (status) => client.setStatus(status).catch(noop);
    const idle = () => {
      if (!away) report("away");
      away = true;
    };
    const active = () => {
      clearTimeout(timer);
      timer = setTimeout(idle, idleMs);
      if (away) report("online");
      away = false;
    };
    const visibility = () => (doc.hidden ? idle() : active());
    for (const name of events) global.addEventListener(name, active, { passive: true });
    doc.addEventListener("visibilitychange", visibility);
    active();
    return {
      stop() {
        clearTimeout(timer);
        for (const name of events) global.removeEventListener(name, active);
        doc.removeEventListener("visibilitychange", visibility);
      },
    };
  }

  global.Tandem = {
    Client,
    connect: (url, options) => new Client(url, options),
    watchJob,
    watchInbox,
    applyFlight,
    watchFlight,
    typingNotifier,
    typingTracker,
    idleStatus,
  };
})(window);
