// The success view: reads the finished job (its result holds the order and the receipt).
(function () {
  "use strict";

  const main = document.getElementById("receipt");
  const jobId = new URLSearchParams(location.search).get("job") || "";
  // Put there by the checkout page in this tab: the job's watch token reads the job.
  const token = sessionStorage.getItem(`tandem.checkout.${jobId}`);

  const el = (tag, text, className) => {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  };

  function problem(message) {
    main.replaceChildren(el("h1", "Receipt unavailable"), el("p", message));
  }

  async function load() {
    if (!jobId || !token) {
      problem("Open this page from the checkout, in the same tab, to see your receipt.");
      return;
    }
    let job;
    try {
      const response = await fetch(`/api/jobs/${encodeURIComponent(jobId)}`, {
        headers: { Authorization: `Bearer ${token}` },
        cache: "no-store",
      });
      job = await response.json();
      if (!response.ok) throw new Error(job.error ? job.error.message : response.statusText);
    } catch (error) {
      problem(`We could not load your order: ${error.message || error}`);
      return;
    }
    if (job.status !== "completed" || !job.result) {
      problem(`This order is ${job.status}, so there is no receipt.`);
      return;
    }
    render(job.result.order, job.result.receipt);
  }

  function render(order, receipt) {
    const money = new Intl.NumberFormat("en-IE", { style: "currency", currency: receipt.currency });
    const cents = (value) => money.format(value / 100);
    const table = el("table", undefined, "summary");
    const body = table.createTBody();
    for (const item of order.items) {
      const row = body.insertRow();
      row.insertCell().textContent = item.name;
      row.insertCell().textContent = `× ${item.quantity}`;
      row.cells[1].className = "qty";
      const amount = row.insertCell();
      amount.textContent = cents(item.quantity * item.unit_cents);
      amount.className = "amount";
    }
    const foot = table.createTFoot();
    for (const [label, value, className] of [
      ["Shipping", order.shipping_cents, ""],
      ["Total paid", receipt.amount_cents, "total"],
    ]) {
      const row = foot.insertRow();
      row.className = className;
      const name = row.insertCell();
      name.colSpan = 2;
      name.textContent = label;
      const amount = row.insertCell();
      amount.textContent = cents(value);
      amount.className = "amount";
    }
    const details = el("dl");
    for (const [term, value] of [
      ["Order", order.number],
      ["Receipt", receipt.number],
      ["Card", receipt.card],
      ["Authorization", receipt.authorization],
      ["Emailed to", receipt.emailed_to],
      ["Date", new Date(receipt.issued_at).toLocaleString("en-GB")],
    ]) {
      details.append(el("dt", term), el("dd", value));
    }
    main.replaceChildren(
      el("div", "✓", "check"),
      el("h1", "Thank you for your order!"),
      el("p", `Your order ${order.number} is on its way. A receipt was sent to ${receipt.emailed_to}.`),
      table,
      details,
    );
  }

  load();
})();
