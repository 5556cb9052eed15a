// Polls /api/dashboard every second and redraws the tables and charts.
// Every text goes in with textContent: names come from operators.
"use strict";

const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";
const CHART_W = 300, CHART_H = 48;

const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

// Accepted and processed per second, on one scale.
function chart(c) {
  const n = Math.max(c.accepted.length, c.processed.length, 2);
  const max = Math.max(1, ...c.accepted, ...c.processed);
  const svg = svgEl("svg", { class: "chart", width: CHART_W, height: CHART_H, viewBox: `0 0 ${CHART_W} ${CHART_H}` });
  svg.appendChild(svgEl("line", { class: "axis", x1: 0, y1: CHART_H - 1, x2: CHART_W, y2: CHART_H - 1 }));
  // Accepted (dashed) on top: where the workers keep up, the two lines meet.
  for (const [key, series] of [["processed", c.processed], ["accepted", c.accepted]]) {
    const pts = series.map((v, i) =>
      `${(i * (CHART_W - 1) / (n - 1)).toFixed(1)},${(CHART_H - 2 - v * (CHART_H - 12) / max).toFixed(1)}`);
    svg.appendChild(svgEl("polyline", { class: key, points: pts.join(" ") }));
  }
  const label = svgEl("text", { x: 2, y: 9 });
  label.textContent = `max ${fmt.format(max)}/s`;
  svg.appendChild(label);
  return svg;
}

function couponRow(c) {
  const tr = el("tr", { "data-coupon-id": c.couponId });
  const name = el("td");
  name.appendChild(el("span", { class: "name" }, c.name));
  name.appendChild(el("span", { class: "id" }, `#${c.couponId}`));
  tr.appendChild(name);
  const stock = el("td", { class: "stock" });
  stock.appendChild(el("span", { class: "stock-left" }, `${c.remainingStock} / ${c.totalQuantity}`));
  const bar = el("div", { class: "bar" });
  const fill = el("div");
  fill.style.width = `${c.totalQuantity ? (100 * c.remainingStock) / c.totalQuantity : 0}%`;
  bar.appendChild(fill);
  stock.appendChild(bar);
  tr.appendChild(stock);
  tr.appendChild(el("td", { class: "num issued" }, String(c.issuedCount)));
  const queue = c.queueSize === null || c.queueSize === undefined ? "?" : String(c.queueSize);
  tr.appendChild(el("td", { class: "num queue", title: c.queueScope || "" }, queue));
  tr.appendChild(el("td", { class: "num accepted-rate" }, fmt.format(c.acceptedPerSecond)));
  tr.appendChild(el("td", { class: "num processed-rate" }, fmt.format(c.processedPerSecond)));
  const cell = el("td", { class: "chart-cell" });
  cell.appendChild(chart(c));
  tr.appendChild(cell);
  return tr;
}

function ago(iso) {
  const s = (Date.now() - Date.parse(iso)) / 1000;
  return s < 90 ? `${Math.max(0, Math.round(s))} s ago` : `${Math.round(s / 60)} min ago`;
}

function workerRow(w) {
  const tr = el("tr", { "data-worker-id": w.workerId });
  tr.appendChild(el("td", {}, w.workerId));
  tr.appendChild(el("td", {}, w.queueType));
  tr.appendChild(el("td", {}, w.host));
  tr.appendChild(el("td", { class: "num" }, String(w.pid)));
  tr.appendChild(el("td", {}, ago(w.startedAt)));
  tr.appendChild(el("td", {}, `${fmt.format(w.secondsSinceSeen)} s ago`));
  return tr;
}

function render(d) {
  $("queue-type").textContent = d.queueType;
  $("updated").textContent = new Date(d.generatedAt).toLocaleTimeString();
  $("coupons").tBodies[0].replaceChildren(...d.coupons.map(couponRow));
  $("no-coupons").hidden = d.coupons.length > 0;
  $("workers").tBodies[0].replaceChildren(...d.workers.map(workerRow));
  $("worker-count").textContent = String(d.workers.length);
  $("no-workers").hidden = d.workers.length > 0;
  for (const [answer, n] of Object.entries(d.door)) {
    const cell = $(`door-${answer}`);
    if (cell) cell.textContent = fmt.format(n);
  }
}

async function poll() {
  try {
    const res = await fetch("/api/dashboard", { cache: "no-store" });
    if (!res.ok) throw new Error(`api answered ${res.status}`);
    render(await res.json());
    $("error").hidden = true;
    $("live").classList.remove("stale");
    $("live").textContent = "live";
  } catch (e) {
    $("error").textContent = `Cannot refresh: ${e.message}`;
    $("error").hidden = false;
    $("live").classList.add("stale");
    $("live").textContent = "stale";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
