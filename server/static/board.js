// The departures board demo: lists the hub's flights over HTTP, learns of new ones on the
// airport's departures channel, follows each one's own channel, and shows a demo user's
// notifications and jobs from their user channel, all with tandem.js.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const config = JSON.parse($("demo-config").textContent);
  if (!config.hub) {
    document.querySelector("main").textContent = "Open this page at /demo/board.";
    return;
  }
  const params = new URLSearchParams(location.search);
  const user = config.users.includes(params.get("user")) ? params.get("user") : config.users[0];
  const refreshMs = Number(params.get("refresh")) || config.refreshMs;
  const leaveAfterMs = Number(params.get("leave")) || config.leaveAfterMs;
  const clock = new Intl.DateTimeFormat("en-GB", {
    hour: "2-digit",
    minute: "2-digit",
    timeZone: config.timeZone,
  });
  const hhmm = (iso) => (iso ? clock.format(new Date(iso)) : "");
  // What the page applied, for the curious and the browser tests; subscriptions(): each
  // channel's {channel, live, recovered} (see tandem.js).
  const trace = (window.boardTrace = {
    flights: [],
    notifications: [],
    unread: [],
    left: [],
    errors: [],
    sweeps: 0,
    subscriptions: () =>
      [airport, inbox.subscription, ...[...rows.values()].map((e) => e.watch && e.watch.subscription)]
        .filter(Boolean)
        .map(({ channel, live, recovered }) => ({ channel, live, recovered })),
  });
  const rows = new Map(); // flight id -> {row, flight, watch, finishedAt, gone}
  const FINISHED = new Set(["departed", "landed", "cancelled", "diverted"]);
  const jobs = new Map(); // job id -> latest snapshot

  for (const name of config.users) $("user").add(new Option(name, name));
  $("user").value = user;
  $("user").addEventListener("change", () => {
    location.search = `?user=${encodeURIComponent($("user").value)}`;
  });
  $("hub").textContent = config.hub;

  // A demo session token, fetched again shortly before it expires (tandem.js asks on every
  // (re)connect; the HTTP calls below ask too).
  let session = null;
  async function token() {
    if (session && session.expires_at - Date.now() / 1000 > 60) return session.token;
    const response = await fetch("/demo/board/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    session = body;
    return session.token;
  }

  const client = Tandem.connect("", {
    token,
    onConnection: showConnection,
    onError: (error) => {
      trace.errors.push(error.code);
      console.warn("tandem:", error.code, error.message);
    },
  });
  const inbox = Tandem.watchInbox(client, user, { onChange: renderInbox, onOther: onJob, keep: 30 });
  $("read-all").addEventListener("click", () => inbox.markRead().catch(console.warn));

  // The list comes over HTTP; new flights (and ones moved to another airport) arrive on
  // airport:<hub> the moment they change, whose history covers a reconnect. The list is asked
  // again every refreshMs all the same, should that history have been lost.
  async function refresh() {
    const since = new Date(Date.now() - 60 * 60 * 1000).toISOString();
    const query = `origin=${config.hub}&departs_after=${encodeURIComponent(since)}&limit=200`;
    try {
      const response = await fetch(`/api/flights?${query}`, {
        headers: { Authorization: `Bearer ${await token()}` },
        cache: "no-store",
      });
      if (!response.ok) return;
      for (const flight of (await response.json()).flights) follow(flight);
    } catch (error) {
      console.warn("board refresh failed", error);
    }
  }
  refresh();
  setInterval(refresh, refreshMs);
  const airport = client.subscribe(`airport:${config.hub}`, (envelope) => {
    const flight = envelope.data;
    if (envelope.type !== "flight.updated" || !flight || typeof flight.version !== "number") return;
    const entry = rows.get(flight.id);
    if (flight.origin !== config.hub) {
      if (entry) leave(entry);
    } else if (!entry) {
      follow(flight);
    } else if (!entry.gone && flight.version > entry.flight.version) {
      entry.flight = flight; // before its own channel's subscription is up
      render(entry, envelope);
    }
  });

  // Like a real board, finished flights leave after a while. So do flights an earlier, stopped
  // run of `tandem demo` left behind as "departed": nothing has changed them for long.
  setInterval(() => {
    trace.sweeps += 1;
    for (const entry of rows.values()) {
      if (!entry.gone && entry.finishedAt && Date.now() - entry.finishedAt > leaveAfterMs) leave(entry);
    }
  }, Math.min(5000, leaveAfterMs / 2));

  function leave(entry) {
    entry.gone = true; // kept, so the next list does not bring it back
    trace.left.push(entry.flight.id);
    entry.row.remove();
    if (entry.watch) entry.watch.stop();
    $("empty").hidden = [...rows.values()].some((other) => !other.gone);
  }

  function follow(flight) {
    if (rows.has(flight.id)) return;
    const entry = { row: document.createElement("tr"), flight };
    entry.row.id = `flight-${flight.id}`;
    rows.set(flight.id, entry);
    place(entry);
    render(entry, null);
    // A list's worth of follow() calls subscribes in one subscribe_many (tandem.js batches the
    // subscribes of one task), as does every reconnect: no per-request rate limit to pace for.
    watch(entry);
  }

  function watch(entry) {
    if (entry.gone) return;
    entry.watch = Tandem.watchFlight(client, entry.flight.id, {
      onUpdate: (next, envelope) => {
        if (entry.gone || next.version < entry.flight.version) return;
        entry.flight = next;
        render(entry, envelope);
        if (envelope) {
          const changes = Object.keys(envelope.data.changes || {});
          trace.flights.push({ id: next.id, type: envelope.type, version: next.version, changes });
        }
      },
    });
  }

  function place(entry) {
    const key = (f) => `${f.scheduled_departure || "~"} ${f.id}`;
    const before = [...rows.values()]
      .filter((other) => other !== entry && other.row.isConnected)
      .sort((a, b) => (key(a.flight) < key(b.flight) ? -1 : 1))
      .find((other) => key(other.flight) > key(entry.flight));
    $("flights").insertBefore(entry.row, before ? before.row : null);
    $("empty").hidden = true;
  }

  function render(entry, envelope) {
    const { row, flight } = entry;
    if (!FINISHED.has(flight.status)) entry.finishedAt = null;
    else if (!entry.finishedAt) entry.finishedAt = envelope ? Date.now() : Date.parse(flight.updated_at);
    const late = flight.estimated_departure && flight.estimated_departure !== flight.scheduled_departure;
    const cells = [
      late ? `<s>${hhmm(flight.scheduled_departure)}</s>${hhmm(flight.estimated_departure)}` : hhmm(flight.scheduled_departure),
      flight.number,
      flight.destination,
      flight.gate || "—",
      flight.status,
      remarks(flight, envelope),
    ];
    row.innerHTML = "";
    cells.forEach((value, i) => {
      const cell = row.insertCell();
      if (i === 0) cell.innerHTML = value; // only our own formatted times
      else cell.textContent = value;
    });
    row.cells[0].className = "time";
    row.cells[4].className = `status status-${flight.status}`;
    row.cells[5].className = "remarks";
    row.dataset.status = flight.status;
    row.dataset.version = String(flight.version);
    if (envelope && envelope.type === "flight.updated") {
      row.classList.remove("changed");
      void row.offsetWidth; // restart the flash animation
      row.classList.add("changed");
    }
  }

  function remarks(flight, envelope) {
    const changes = (envelope && envelope.data.changes) || {};
    switch (flight.status) {
      case "boarding":
        return `Go to gate ${flight.gate}`;
      case "delayed":
        return `Delayed ${flight.delay_minutes} min`;
      case "departed": {
        const p = flight.position;
        const altitude = p && p.altitude ? ` · ${Math.round(p.altitude).toLocaleString()} m` : "";
        return `Departed ${hhmm(flight.actual_departure)}${altitude}`;
      }
      case "landed":
        return `Landed ${hhmm(flight.actual_arrival)}`;
      case "cancelled":
        return "Cancelled — see the transfer desk";
      case "diverted":
        return "Diverted";
      default:
        return changes.gate ? "Gate changed" : "";
    }
  }

  function renderInbox(state, envelope) {
    $("unread").textContent = String(state.unread);
    $("unread").className = state.unread ? "badge" : "badge zero";
    trace.unread.push(state.unread);
    if (envelope && envelope.type === "notification.created") trace.notifications.push(envelope.data);
    const list = $("notifications");
    list.innerHTML = "";
    for (const n of state.latest) {
      const item = document.createElement("li");
      item.className = `type-${n.type}${n.read_at ? "" : " unread"}`;
      item.dataset.id = n.id;
      const title = document.createElement("div");
      title.className = "title";
      title.textContent = n.title;
      const body = document.createElement("div");
      body.className = "body";
      body.textContent = n.body;
      item.append(title, body);
      if (!n.read_at) {
        // Unread items are buttons: reachable by Tab, read with Enter or Space.
        const read = () => inbox.markRead([n.id]).catch(console.warn);
        item.tabIndex = 0;
        item.setAttribute("role", "button");
        item.setAttribute("aria-label", `Mark read: ${n.title}`);
        item.addEventListener("click", read);
        item.addEventListener("keydown", (event) => {
          if (event.key !== "Enter" && event.key !== " ") return;
          event.preventDefault();
          read();
        });
      }
      list.append(item);
    }
  }

  function onJob(envelope) {
    const job = envelope.data;
    if (!envelope.type.startsWith("job.") || !job || typeof job.version !== "number") return;
    const known = jobs.get(job.id);
    if (known && known.version >= job.version) return;
    jobs.set(job.id, job);
    const list = $("jobs");
    list.innerHTML = "";
    for (const j of [...jobs.values()].reverse().slice(0, 6)) {
      const item = document.createElement("li");
      item.textContent = `${j.message || j.kind} · ${j.status} ${j.progress} %`;
      const bar = document.createElement("div");
      bar.className = "job-bar";
      bar.append(document.createElement("div"));
      bar.firstChild.style.width = `${j.progress}%`;
      item.append(bar);
      list.append(item);
    }
  }

  function showConnection(state) {
    const label = { connected: "Live", reconnecting: "Reconnecting…", offline: "Offline" }[state];
    $("connection").textContent = label || state;
    $("connection").className = `connection${state === "connected" ? " live" : ""}`;
    if (state === "connected") refresh();
  }
})();
