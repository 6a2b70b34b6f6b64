/*
 * The admin console: sign in with an admin API key (kept in this tab's sessionStorage), read
 * the admin API, and follow every node's numbers live on the admin:stats channel (with a
 * short-lived admin token from POST /api/tokens). Lists are read again when a node's numbers
 * say they changed, not on a timer. Actions (disconnect, unsubscribe, revoke) ask first.
 */
(function () {
  "use strict";

  const KEY_STORAGE = "tandem-admin-key";
  const STATS_CHANNEL = "admin:stats";
  const $ = (id) => document.getElementById(id);
  const state = { key: null, client: null, stats: new Map(), nodes: [], refresh: null, channel: null };
  // For tests and the curious: what the console last saw.
  window.adminTrace = { snapshots: 0, refreshes: 0 };

  // -- the API ------------------------------------------------------------------------------

  async function api(path, { method = "GET", body, key = state.key } = {}) {
    const headers = { Authorization: `Bearer ${key}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error((data.error && data.error.message) || response.statusText);
      error.status = response.status;
      error.code = data.error && data.error.code;
      throw error;
    }
    return data;
  }

  const user = (name) => encodeURIComponent(name);

  // -- signing in and out ---------------------------------------------------------------------

  async function signIn(key) {
    $("sign-in-error").textContent = "";
    try {
      await api("/api/admin/nodes", { key });
    } catch (error) {
      const why = error.status === 401 || error.status === 403 ? "This key was refused" : "Cannot sign in";
      $("sign-in-error").textContent = `${why}: ${error.message}`;
      $("key").focus();
      return;
    }
    state.key = key;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("sign-in").hidden = true;
    $("console").hidden = false;
    $("sign-out").hidden = false;
    await refresh();
    connectLive();
    // Keyboard and screen reader users land on the first region, not on a vanished form.
    $("nodes-title").tabIndex = -1;
    $("nodes-title").focus();
  }

  function signOut() {
    sessionStorage.removeItem(KEY_STORAGE);
    state.key = null;
    if (state.client) state.client.close();
    state.client = null;
    state.stats.clear();
    $("console").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in").hidden = false;
    $("key").value = "";
    setLive("Signed out", false);
    $("key").focus();
  }

  function setLive(text, live) {
    $("live").textContent = text;
    $("live").classList.toggle("live", live);
  }

  // -- live numbers ---------------------------------------------------------------------------

  function connectLive() {
    const token = () =>
      api("/api/tokens", { method: "POST", body: { sub: "admin-console", scope: "admin", ttl: 600 } }).then(
        (answer) => answer.token,
      );
    const client = (state.client = Tandem.connect("", {
      token,
      onConnection: (status) =>
        setLive({ connected: "Live", reconnecting: "Reconnecting…", offline: "Offline" }[status] || "Disconnected", status === "connected"),
      onError: (error) => note(`Live updates: ${error.message || error.code}`),
    }));
    client.subscribe(STATS_CHANNEL, (envelope) => onSnapshot(envelope.data));
  }

  function onSnapshot(snapshot) {
    if (!snapshot || typeof snapshot.node !== "string") return;
    const before = state.stats.get(snapshot.node);
    state.stats.set(snapshot.node, snapshot);
    window.adminTrace.snapshots += 1;
    renderNodes();
    renderEvents();
    const changed =
      !before || before.connections !== snapshot.connections || before.channels !== snapshot.channels ||
      before.subscriptions !== snapshot.subscriptions;
    if (changed) scheduleRefresh();
  }

  function scheduleRefresh() {
    clearTimeout(state.refresh);
    state.refresh = setTimeout(() => refresh().catch((error) => note(error.message)), 250);
  }

  // -- reading the lists ----------------------------------------------------------------------

  async function refresh() {
    const [nodes, connections, channels] = await Promise.all([
      api("/api/admin/nodes"),
      loadConnections(),
      api("/api/admin/channels?limit=100"),
    ]);
    state.nodes = nodes.nodes;
    renderNodes();
    renderConnections(connections);
    renderChannels(channels);
    window.adminTrace.refreshes += 1;
  }

  function loadConnections() {
    const filter = $("user-filter").value.trim();
    return filter
      ? api(`/api/admin/users/${user(filter)}/connections`)
      : api("/api/admin/connections?limit=200");
  }

  // `label` names the column: a phone shows each connection as a card of labelled lines.
  function cell(row, text, className, label) {
    const td = row.insertCell();
    td.textContent = text;
    if (className) td.className = className;
    if (label) td.dataset.label = label;
    return td;
  }

  function button(label, className, onClick, accessibleName) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = className;
    b.textContent = label;
    if (accessibleName) b.setAttribute("aria-label", accessibleName);
    b.addEventListener("click", onClick);
    return b;
  }

  function renderNodes() {
    const body = $("nodes");
    body.replaceChildren();
    const ids = new Set(state.nodes.map((n) => n.node));
    for (const id of state.stats.keys()) ids.add(id);
    for (const id of [...ids].sort()) {
      const listed = state.nodes.find((n) => n.node === id);
      const stats = state.stats.get(id);
      const alive = listed ? listed.alive : true;
      const row = body.insertRow();
      row.dataset.node = id;
      cell(row, id, "mono");
      cell(row, alive ? "alive" : "down", alive ? "status-alive" : "status-down");
      cell(row, String(stats ? stats.connections : listed ? listed.connections : "–"));
      cell(row, String(stats ? stats.channels : listed ? listed.channels : "–"));
      cell(row, stats ? stats.publish_rate.toFixed(1) : "–");
      cell(row, stats ? stats.delivery_rate.toFixed(1) : "–");
      cell(row, stats ? String(stats.slow_total) : "–");
      cell(row, stats ? String(stats.errors_total) : "–");
    }
    $("node-count").textContent = `(${ids.size})`;
  }

  function renderConnections(answer) {
    const body = $("connections");
    body.replaceChildren();
    for (const c of answer.connections) {
      const row = body.insertRow();
      row.dataset.connection = c.connection;
      row.dataset.user = c.user;
      cell(row, c.user, "wrap user", "User");
      cell(row, c.node, "mono", "Node");
      cell(row, c.connection, "mono", "Connection");
      cell(row, c.transport, "", "Transport");
      cell(row, new Date(c.connected_since).toLocaleTimeString(), "", "Since");
      cell(row, c.channels.join(", ") || "–", "wrap", "Channels");
      cell(row, `${c.address} ${c.user_agent}`.trim(), "wrap", "Client");
      const actions = row.insertCell();
      actions.append(
        button("Disconnect", "danger small", () => disconnectConnection(c), `Disconnect connection ${c.connection} of ${c.user}`),
        button("Disconnect user", "danger small", () => disconnectUser(c.user), `Disconnect every connection of ${c.user}`),
      );
    }
    if (!answer.connections.length) emptyRow(body, 8, "No connections.");
    const missing = answer.missing.length ? `, not answering: ${answer.missing.join(", ")}` : "";
    $("connection-count").textContent = `(${answer.connections.length}${missing})`;
  }

  function renderChannels(answer) {
    const body = $("channels");
    body.replaceChildren();
    for (const c of answer.channels) {
      const row = body.insertRow();
      row.dataset.channel = c.channel;
      cell(row, c.channel, "mono wrap");
      cell(row, String(c.subscribers));
      row.insertCell().append(button("Open", "secondary small", () => openChannel(c.channel), `Open ${c.channel}`));
    }
    if (!answer.channels.length) emptyRow(body, 3, "No channel has subscribers.");
    $("channel-count").textContent = `(${answer.channels.length})`;
  }

  function emptyRow(body, span, text) {
    const td = body.insertRow().insertCell();
    td.colSpan = span;
    td.className = "empty";
    td.textContent = text;
  }

  function renderEvents() {
    const slow = [];
    const errors = [];
    for (const [node, s] of state.stats) {
      for (const e of s.slow) slow.push({ node, ...e });
      for (const e of s.errors) errors.push({ node, ...e });
    }
    fillEvents($("slow"), slow, (e) => `${e.user || "?"} (${e.connection}) on ${e.node}: ${e.message}`, "No slow consumers.");
    fillEvents($("errors"), errors, (e) => `${e.code} on ${e.node} (${e.source}): ${e.message}`, "No errors.");
  }

  function fillEvents(list, events, describe, emptyText) {
    list.replaceChildren();
    events.sort((a, b) => b.ts - a.ts);
    for (const e of events.slice(0, 30)) {
      const li = document.createElement("li");
      const when = document.createElement("span");
      when.className = "when";
      when.textContent = new Date(e.ts * 1000).toLocaleTimeString();
      li.append(when, describe(e));
      list.append(li);
    }
    if (!events.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = emptyText;
      list.append(li);
    }
  }

  // -- one channel ------------------------------------------------------------------------------

  async function openChannel(channel) {
    state.channel = channel;
    const detail = $("channel-detail");
    detail.hidden = false;
    $("channel-title").textContent = channel;
    const name = encodeURIComponent(channel);
    const [history, presence] = await Promise.allSettled([
      api(`/api/channels/${name}/history?limit=20`),
      api(`/api/channels/${name}/presence`),
    ]);
    const list = $("history");
    list.replaceChildren();
    if (history.status === "fulfilled") {
      for (const p of history.value.publications.slice().reverse()) {
        const li = document.createElement("li");
        const when = document.createElement("span");
        when.className = "when";
        when.textContent = `#${p.offset} ${new Date(p.ts * 1000).toLocaleTimeString()}`;
        const type = document.createElement("span");
        type.className = "type";
        type.textContent = p.type;
        li.append(when, type, " ", JSON.stringify(p.data).slice(0, 200));
        list.append(li);
      }
      if (!history.value.publications.length) list.append(item("No retained publications.", "empty"));
    } else {
      list.append(item(history.reason.message, "error"));
    }
    const members = $("presence");
    members.replaceChildren();
    if (presence.status === "fulfilled") {
      for (const m of presence.value.members) {
        members.append(item(`${m.name || m.user} (${m.user}): ${m.status}, ${m.connections} connection(s)`));
      }
      if (!presence.value.members.length) members.append(item("Nobody is present.", "empty"));
    } else {
      members.append(item(presence.reason.message, "empty"));
    }
    $("channel-title").tabIndex = -1;
    $("channel-title").focus();
  }

  function item(text, className) {
    const li = document.createElement("li");
    li.textContent = text;
    if (className) li.className = className;
    return li;
  }

  // -- actions ----------------------------------------------------------------------------------

  function confirmAction(text, action) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = action;
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      $("confirm-ok").focus();
    });
  }

  function note(text) {
    $("result").textContent = text;
  }

  function summary(answer) {
    return answer.missing.length ? ` Not answering: ${answer.missing.join(", ")}.` : "";
  }

  async function act(question, verb, run, describe) {
    if (!(await confirmAction(question, verb))) return;
    try {
      const answer = await run();
      note(describe(answer) + summary(answer));
    } catch (error) {
      note(`Failed: ${error.message}`);
    }
    await refresh().catch((error) => note(error.message));
  }

  function disconnectConnection(c) {
    return act(
      `Disconnect connection ${c.connection} of ${c.user} on ${c.node}?`,
      "Disconnect",
      () => api(`/api/admin/connections/${encodeURIComponent(c.connection)}/disconnect`, { method: "POST", body: {} }),
      (a) => `Disconnected ${a.disconnected} connection(s).`,
    );
  }

  function disconnectUser(name) {
    return act(
      `Disconnect every connection of ${name} on every node?`,
      "Disconnect user",
      () => api(`/api/admin/users/${user(name)}/disconnect`, { method: "POST", body: {} }),
      (a) => `Disconnected ${a.disconnected} connection(s) of ${name}.`,
    );
  }

  function unsubscribe(name, channel) {
    return act(
      `Unsubscribe ${name} from ${channel} on every connection?`,
      "Unsubscribe",
      () => api(`/api/admin/users/${user(name)}/unsubscribe`, { method: "POST", body: { channel } }),
      (a) => `Ended ${a.unsubscribed} subscription(s) of ${name} to ${channel}.`,
    );
  }

  function revoke(name, local) {
    const before = local ? new Date(local).toISOString() : undefined;
    return act(
      `Revoke every token of ${name} issued before ${before || "now"}? Their connections using one are cut.`,
      "Revoke tokens",
      () => api(`/api/admin/users/${user(name)}/revoke-tokens`, { method: "POST", body: before ? { before } : {} }),
      (a) => `Revoked tokens of ${a.user} issued before ${a.revoked_before}; disconnected ${a.disconnected}.`,
    );
  }

  // -- wiring -----------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      signIn($("key").value.trim());
    });
    $("sign-out").addEventListener("click", signOut);
    let filterTimer = null;
    $("user-filter").addEventListener("input", () => {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(() => loadConnections().then(renderConnections, (e) => note(e.message)), 250);
    });
    $("open-channel-form").addEventListener("submit", (event) => {
      event.preventDefault();
      openChannel($("open-channel").value.trim());
    });
    $("unsubscribe-form").addEventListener("submit", (event) => {
      event.preventDefault();
      if (state.channel) unsubscribe($("unsubscribe-user").value.trim(), state.channel);
    });
    $("revoke-form").addEventListener("submit", (event) => {
      event.preventDefault();
      revoke($("revoke-user").value.trim(), $("revoke-before").value);
    });
    const saved = sessionStorage.getItem(KEY_STORAGE);
    if (saved) signIn(saved);
    else $("key").focus();
  });
})();
