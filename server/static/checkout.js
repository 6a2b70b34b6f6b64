// The checkout demo page: "Pay" starts a job on the server, the page watches it with tandem.js.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const config = JSON.parse($("demo-config").textContent);
  const cart = config.cart;
  if (!cart) {
    document.querySelector("main").textContent = "Open this page at /demo/checkout.";
    return;
  }
  const money = new Intl.NumberFormat("en-IE", { style: "currency", currency: cart.currency });
  const cents = (value) => money.format(value / 100);
  // Every snapshot shown, for the curious and the browser tests: {version, status, progress, via}.
  const trace = (window.checkoutTrace = []);
  let watch = null;

  for (const item of cart.items) {
    const row = $("items").insertRow();
    row.insertCell().textContent = item.name;
    row.insertCell().textContent = `× ${item.quantity}`;
    row.cells[1].className = "qty";
    const amount = row.insertCell();
    amount.textContent = cents(item.quantity * item.unit_cents);
    amount.className = "amount";
  }
  $("subtotal").textContent = cents(cart.subtotal_cents);
  $("shipping").textContent = cents(cart.shipping_cents);
  $("total").textContent = cents(cart.total_cents);
  $("pay").textContent = `Pay ${cents(cart.total_cents)}`;
  $("pay").disabled = false;
  $("pay").addEventListener("click", pay);
  $("retry").addEventListener("click", reset);

  async function pay() {
    $("pay").disabled = true;
    $("outcome").hidden = true;
    $("status").hidden = false;
    showProgress(0, "Contacting the payment service…");
    let started;
    try {
      const response = await fetch("/demo/checkout/pay", { method: "POST" });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
      started = body;
    } catch (error) {
      showOutcome(false, "We could not start the payment.", String(error.message || error));
      return;
    }
    const job = started.job;
    document.body.dataset.job = job.id;
    // The success page reads the receipt with this token (same tab only).
    sessionStorage.setItem(`tandem.checkout.${job.id}`, started.watch_token);
    render(job, "http");
    watch = Tandem.watchJob(job.id, started.watch_token, {
      pollMs: config.pollMs,
      onUpdate: render,
      onConnection: showConnection,
      onError: (error) => console.warn("tandem:", error.code, error.message),
    });
  }

  function render(job, via) {
    trace.push({ version: job.version, status: job.status, progress: job.progress, via });
    // A finished job says so: its last stage ("Emailing the receipt…") is over.
    const final = { completed: "Done", failed: "Stopped", cancelled: "Cancelled" }[job.status];
    showProgress(
      job.progress,
      final || job.message || job.stage || "Waiting for the payment service…",
    );
    if (job.status === "completed") {
      showOutcome(true, "Payment confirmed. Thank you!", "Taking you to your receipt…");
      const next = `/demo/checkout/success?job=${encodeURIComponent(job.id)}`;
      setTimeout(() => location.assign(next), config.redirectMs);
    } else if (job.status === "failed") {
      const error = job.error || {};
      showOutcome(false, "Payment failed.", error.message || "The payment did not go through.");
    } else if (job.status === "cancelled") {
      showOutcome(false, "Order cancelled.", "Nothing was charged.");
    }
  }

  function showProgress(progress, stage) {
    $("bar-fill").style.width = `${progress}%`;
    document.querySelector("[role=progressbar]").setAttribute("aria-valuenow", String(progress));
    $("percent").textContent = `${progress} %`;
    $("stage").textContent = stage;
  }

  function showOutcome(ok, title, detail) {
    $("connection").hidden = true;
    $("status").className = `status ${ok ? "good" : "bad"}`;
    $("outcome").hidden = false;
    $("outcome").className = `outcome ${ok ? "good" : "bad"}`;
    $("outcome-title").textContent = title;
    $("outcome-detail").textContent = detail;
    $("retry").hidden = ok;
  }

  function showConnection(state) {
    const label = {
      connected: "Live",
      reconnecting: "Reconnecting…",
      offline: "Offline — we'll catch up when you're back",
    }[state];
    $("connection").hidden = !label || !$("outcome").hidden;
    $("connection").textContent = label || "";
    $("connection").className = `connection${state === "connected" ? " live" : ""}`;
  }

  function reset() {
    if (watch) watch.stop();
    watch = null;
    delete document.body.dataset.job;
    $("outcome").hidden = true;
    $("status").hidden = true;
    $("status").className = "status";
    $("pay").disabled = false;
  }
})();
