// clickwire live dashboard: one snapshot, then server-sent updates; charts drawn on <canvas>.
// Nothing is loaded from elsewhere (the API serves this page with a strict Content-Security-Policy).
"use strict";

const BIN_S = 10;        // seconds per bar
const SERIES = 6;        // named series per chart; the rest is drawn as "other"
const LATEST = 50;
const COLORS = ["#3b5bdb", "#1f9d55", "#e8590c", "#ae3ec9", "#0c8599", "#d6336c", "#adb5bd"];
const KEY = "clickwire.dashboard.token";

const $ = (id) => document.getElementById(id);
const state = { buckets: new Map(), latest: [], totals: null, webhooks: [], windowS: 600, skewMs: 0, seq: 0,
  shownSeq: 0 };
let source = null;
let drawQueued = false;

// ---- token ---------------------------------------------------------------------------------------

function takeToken() {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) {
    sessionStorage.setItem(KEY, fromUrl);
    url.searchParams.delete("token");
    // The key should not stay in the address bar, history or a shared screenshot.
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(KEY);
}

function askToken(message) {
  if (source) { source.close(); source = null; }
  sessionStorage.removeItem(KEY);
  $("board").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  setStatus("error", "signed out");
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (token) { sessionStorage.setItem(KEY, token); connect(); }
});

// ---- connection ----------------------------------------------------------------------------------

function setStatus(kind, text) {
  $("status").dataset.state = kind;
  $("status").textContent = text;
}

async function connect() {
  const token = takeToken();
  if (!token) { askToken(""); return; }
  setStatus("connecting", "connecting");
  let response;
  try {
    // A plain API call first: it checks the key with the usual header and fills the page at once.
    response = await fetch("/v1/dashboard/snapshot", { headers: { Authorization: `Bearer ${token}` } });
  } catch (err) {
    setStatus("error", "API unreachable, retrying");
    setTimeout(connect, 5000);
    return;
  }
  if (response.status === 401) { askToken("That key was refused (invalid or revoked)."); return; }
  if (!response.ok) { setStatus("error", `API answered ${response.status}, retrying`); setTimeout(connect, 5000); return; }
  apply(await response.json());
  $("login").hidden = true;
  $("board").hidden = false;
  // EventSource cannot send an Authorization header, so the stream takes the key as ?token=.
  source = new EventSource(`/v1/dashboard/stream?token=${encodeURIComponent(token)}`);
  source.addEventListener("snapshot", (e) => { apply(JSON.parse(e.data)); setStatus("live", "live"); });
  source.addEventListener("update", (e) => { apply(JSON.parse(e.data)); setStatus("live", "live"); });
  source.onerror = () => {
    if (source && source.readyState === EventSource.CLOSED) {
      // Closed for good (an error status): start over, which re-checks the key.
      source = null;
      setStatus("error", "disconnected, retrying");
      setTimeout(connect, 5000);
    } else {
      setStatus("connecting", "reconnecting");
    }
  };
}

// ---- state ---------------------------------------------------------------------------------------

function apply(msg) {
  if (msg.kind === "snapshot") { state.buckets.clear(); state.latest = []; state.seq = 0; }
  state.windowS = msg.window_s;
  state.skewMs = msg.now_ms - Date.now();
  for (const b of msg.buckets) state.buckets.set(b.t, b);
  const fresh = msg.latest.filter((row) => row.seq > state.seq);
  for (const row of fresh) { state.latest.push(row); state.seq = row.seq; }
  // Newest first by the redirector's clock: arrival order interleaves partitions.
  state.latest.sort((a, b) => b.ts_ms - a.ts_ms || b.seq - a.seq);
  state.latest.length = Math.min(state.latest.length, LATEST);
  state.totals = msg.totals;
  state.webhooks = msg.webhooks;
  $("workspace").textContent = msg.workspace;
  if (msg.kind === "snapshot") state.shownSeq = state.seq;  // highlight only what arrives live
  schedule();
}

function nowS() { return Math.floor((Date.now() + state.skewMs) / 1000); }

function prune() {
  const first = nowS() - state.windowS;
  for (const t of state.buckets.keys()) if (t <= first) state.buckets.delete(t);
}

function schedule() {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(() => { drawQueued = false; render(); });
}

// ---- rendering -----------------------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) node.append(child);
  return node;
}

function render() {
  if (!state.totals) return;
  prune();
  const t = state.totals;
  $("total-clicks").textContent = t.clicks;
  $("total-humans").textContent = t.humans;
  $("total-bots").textContent = t.bots;
  $("bot-share").textContent = t.clicks ? `${Math.round((100 * t.bots) / t.clicks)}%` : "–";
  let recent = 0;
  for (const [sec, b] of state.buckets) if (sec > nowS() - 10) recent += b.humans + b.bots;
  $("rate").textContent = (recent / 10).toFixed(1);
  chart("links", "links", t.links);
  chart("campaigns", "campaigns", t.campaigns);
  kinds(t);
  bars($("countries"), t.countries.slice(0, 10).map(([cc, n]) => [cc, n, "", `country-${cc}`]), t.clicks);
  webhooks();
  latest();
  state.shownSeq = state.seq;
}

// Stacked bars: one bar per BIN_S seconds over the window, one colour per top key.
function chart(id, field, top) {
  const canvas = $(`chart-${id}`);
  const names = top.slice(0, SERIES).map(([k]) => k);
  const binCount = Math.ceil(state.windowS / BIN_S);
  const end = nowS() + 1;
  const start = end - binCount * BIN_S;
  const bins = Array.from({ length: binCount }, () => new Array(names.length + 1).fill(0));
  let total = 0;
  for (const [sec, b] of state.buckets) {
    const i = Math.floor((sec - start) / BIN_S);
    if (i < 0 || i >= binCount) continue;
    for (const [key, n] of Object.entries(b[field])) {
      const s = names.indexOf(key);
      bins[i][s < 0 ? names.length : s] += n;
      total += n;
    }
  }
  canvas.dataset.total = total;

  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight || 220;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const left = 34, bottom = 18, plotW = width - left - 4, plotH = height - bottom - 6;
  const max = Math.max(1, ...bins.map((bin) => bin.reduce((a, n) => a + n, 0)));
  const step = niceStep(max);
  const top_ = Math.ceil(max / step) * step;
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#6b7385"; g.strokeStyle = "#e3e6ec"; g.lineWidth = 1;
  for (let v = 0; v <= top_; v += step) {
    const y = 6 + plotH - (v / top_) * plotH;
    g.beginPath(); g.moveTo(left, Math.round(y) + 0.5); g.lineTo(width - 4, Math.round(y) + 0.5); g.stroke();
    g.textAlign = "right"; g.fillText(String(v), left - 5, y + 4);
  }
  g.textAlign = "center";
  for (let m = 10; m >= 0; m -= 2) {
    const x = left + plotW * (1 - (m * 60) / (binCount * BIN_S));
    g.fillText(m ? `-${m} min` : "now", Math.min(Math.max(x, left + 18), width - 18), height - 4);
  }
  const barW = plotW / binCount;
  bins.forEach((bin, i) => {
    let y = 6 + plotH;
    bin.forEach((n, s) => {
      if (!n) return;
      const h = (n / top_) * plotH;
      g.fillStyle = COLORS[s < names.length ? s : COLORS.length - 1];
      g.fillRect(left + i * barW + 1, y - h, Math.max(1, barW - 2), h);
      y -= h;
    });
  });

  const legend = $(`legend-${id}`);
  const counts = new Map(top);
  const rest = top.slice(SERIES).reduce((a, [, n]) => a + n, 0);
  const entries = names.map((k, s) => [k, counts.get(k), COLORS[s]]);
  if (rest) entries.push(["other", rest, COLORS[COLORS.length - 1]]);
  legend.replaceChildren(...entries.map(([k, n, color]) => {
    const swatch = el("i");
    swatch.style.background = color;
    const count = el("b", { textContent: n });
    count.dataset.testid = `${id}-total-${k}`;
    return el("li", {}, swatch, k, count);
  }));
}

function niceStep(max) {
  const raw = max / 4;
  const mag = 10 ** Math.floor(Math.log10(raw || 1));
  const unit = [1, 2, 5, 10].find((u) => u * mag >= raw) || 10;
  return Math.max(1, unit * mag);
}

function kinds(t) {
  const rows = [["human", t.humans, "human", "kind-human"]];
  for (const [kind, n] of Object.entries(t.bot_kinds)) rows.push([`bot · ${kind.replace(/_/g, " ")}`, n, "bot", `kind-${kind}`]);
  bars($("kinds"), rows, t.clicks);
}

function bars(container, rows, total) {
  const cells = [];
  for (const [label, n, kind, testid] of rows) {
    const fill = el("div", { className: `fill ${kind}` });
    fill.style.width = `${total ? (100 * n) / total : 0}%`;
    const count = el("span", { className: "n", textContent: n });
    count.dataset.testid = testid;
    cells.push(el("span", { textContent: label }), el("div", { className: "track" }, fill), count);
  }
  container.replaceChildren(...cells);
}

function ago(ms) {
  if (!ms) return "–";
  const s = Math.max(0, Math.round((Date.now() + state.skewMs - ms) / 1000));
  return s < 60 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
}

function cell(text, className, testid) {
  const td = el("td", { textContent: text, className: className || "" });
  if (testid) td.dataset.testid = testid;
  return td;
}

function webhooks() {
  const body = $("webhooks").tBodies[0];
  $("webhooks-empty").hidden = state.webhooks.length > 0;
  body.replaceChildren(...state.webhooks.map((w) => {
    const attempts = w.successes + w.failures;
    const name = el("td", {}, w.description || w.url, el("span", { className: "sub mono", textContent: w.id }));
    const bar = el("span", { className: "rate" }, el("span"));
    bar.firstChild.style.width = `${attempts ? (100 * w.successes) / attempts : 0}%`;
    const rate = el("td", {}, bar, attempts ? `${Math.round((100 * w.successes) / attempts)}%` : "no attempts");
    const ok = w.last_status >= 200 && w.last_status < 300;
    const status = el("span", { className: `badge ${w.last_outcome == null ? "" : ok ? "good" : "bad"}`,
      textContent: w.last_outcome == null ? "–" : `${w.last_status || w.last_error || "error"} ${w.last_outcome}` });
    status.dataset.testid = `wh-status-${w.id}`;
    const row = el("tr", {}, name, rate, cell(w.successes, "num", `wh-ok-${w.id}`),
      cell(w.failures, "num", `wh-failed-${w.id}`), el("td", {}, status),
      cell(w.last_latency_ms == null ? "–" : `${w.last_latency_ms.toFixed(1)} ms`, "num", `wh-latency-${w.id}`),
      cell(ago(w.last_ms)));
    row.dataset.testid = "webhook-row";
    return row;
  }));
}

function latest() {
  const body = $("latest").tBodies[0];
  $("latest-empty").hidden = state.latest.length > 0;
  body.replaceChildren(...state.latest.map((c) => {
    const who = c.is_bot
      ? el("span", { className: "badge bad", textContent: `bot · ${c.bot_kind.replace(/_/g, " ")}`, title: c.bot_name })
      : el("span", { className: "badge good", textContent: "human" });
    who.dataset.testid = c.is_bot ? "badge-bot" : "badge-human";
    const trust = el("span", { className: `badge ${c.trust >= 80 ? "good" : c.trust >= 50 ? "warn" : "bad"}`,
      textContent: c.trust, title: c.signals.join(", ") || "no signal fired" });
    trust.dataset.testid = "badge-trust";
    const time = new Date(c.ts_ms).toLocaleTimeString([], { hour12: false });
    const row = el("tr", { className: c.seq > state.shownSeq ? "fresh" : "" },
      cell(time, "mono"), cell(c.link, "mono"), cell(c.campaign || "–"),
      cell([c.country, c.city].filter(Boolean).join(" · ") || "–"),
      cell([c.device, c.browser].filter(Boolean).join(" · ") || "–"), cell(c.referrer || "direct"),
      el("td", {}, who), el("td", {}, trust));
    row.dataset.testid = "latest-row";
    row.dataset.clickId = c.id;
    return row;
  }));
}

// Bars slide left and totals age out even when no click arrives.
setInterval(schedule, 1000);
window.addEventListener("resize", schedule);
connect();
