// doppel dashboard: plant overview, twins with live tags and charts, alarms
// with acknowledgement, driver health and events. Data comes from the JSON
// API (/api/v1) and the live stream (Server-Sent Events, which reconnect by
// themselves); a value older than STALE_MS or of bad quality is marked.
"use strict";

const STALE_MS = 60000;
const CHART_POINTS = 600;
const $ = (sel) => document.querySelector(sel);

const state = {
  token: localStorage.getItem("doppel.token") || "",
  plant: null,
  twins: [],
  tags: new Map(), // name -> {name, value, quality, ts (ms), unit}
  selected: localStorage.getItem("doppel.twin") || null,
  charts: new Map(), // tag -> {u, xs, ys}
  alarms: [],
  events: [],
  source: null,
  dirty: false,
};

function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.token) h.Authorization = "Bearer " + state.token;
  return h;
}

async function api(path, opts = {}) {
  const res = await fetch(path, { ...opts, headers: headers() });
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (res.status === 401) askToken();
  if (!res.ok) {
    const err = new Error((body && body.error) || res.statusText);
    err.status = res.status;
    err.body = body;
    throw err;
  }
  return body;
}

function askToken() {
  const d = $("#token-dialog");
  if (!d.open) d.showModal();
}

$("#token-btn").addEventListener("click", askToken);
$("#token-dialog").addEventListener("close", () => {
  if ($("#token-dialog").returnValue !== "ok") return;
  state.token = $("#token-input").value.trim();
  localStorage.setItem("doppel.token", state.token);
  connect();
});

// ---- formatting --------------------------------------------------------------

function fmtValue(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") {
    const a = Math.abs(v);
    return a >= 1000 ? v.toFixed(0) : a >= 100 ? v.toFixed(1) : v.toFixed(2);
  }
  if (typeof v === "boolean") return v ? "on" : "off";
  return String(v);
}

function fmtTime(ts) {
  if (!ts) return "";
  return new Date(ts).toLocaleTimeString();
}

function toMs(ts) {
  return typeof ts === "number" ? ts : ts ? Date.parse(ts) : 0;
}

// The mark shown next to a value: bad, uncertain, stale or good.
function mark(tag) {
  if (!tag) return "bad";
  if (tag.value === null || tag.value === undefined) return tag.quality === "good" ? "none" : tag.quality;
  if (tag.quality !== "good") return tag.quality;
  // A setpoint without a device changes only when written: never stale.
  const periodic = !(tag.writable && !tag.source);
  if (periodic && Date.now() - tag.ts > STALE_MS) return "stale";
  return "good";
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// ---- tabs ----------------------------------------------------------------------

for (const b of document.querySelectorAll(".tab")) {
  b.addEventListener("click", () => showTab(b.dataset.tab));
}
$("#alarm-badge").addEventListener("click", () => showTab("alarms"));

function showTab(name) {
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".view")) s.classList.toggle("hidden", s.id !== "tab-" + name);
  if (name === "drivers") loadDrivers();
  if (name === "alarms") loadAlarms();
  if (name === "plant") resizeCharts();
}

// ---- plant and twins -------------------------------------------------------------

async function loadAll() {
  const [plant, twins, tags] = await Promise.all([
    api("/api/v1/plant"), api("/api/v1/twins"), api("/api/v1/tags"),
  ]);
  state.plant = plant;
  state.twins = twins;
  state.tags.clear();
  for (const t of tags) state.tags.set(t.name, { ...t, ts: toMs(t.ts) });
  $("#plant-name").textContent = plant.name;
  $("#who").textContent = plant.you.name + " · " + plant.you.role;
  const engineer = plant.you.role === "engineer";
  $("#reload-btn").classList.toggle("hidden", !engineer);
  $("#shadow-btn").classList.toggle("hidden", !engineer || !plant.guard);
  renderGuard(plant.guard);
  if (!state.selected || !twins.some((t) => t.name === state.selected)) {
    state.selected = twins.length ? twins[0].name : null;
  }
  renderTwins();
  await selectTwin(state.selected);
  loadAlarms();
  loadEvents();
}

function twinTags(name) {
  return [...state.tags.values()].filter((t) => t.name.startsWith(name + "."));
}

function renderTwins() {
  const box = $("#twins");
  box.replaceChildren();
  for (const tw of state.twins) {
    const kv = el("div", { class: "kv" });
    for (const t of twinTags(tw.name).slice(0, 6)) {
      const m = mark(t);
      kv.append(el("span", {}, t.name.slice(tw.name.length + 1)),
        el("b", { class: m, "data-tag": t.name }, fmtValue(t.value) + (t.unit ? " " + t.unit : "")));
    }
    const status = tw.suspended ? el("span", { class: "q bad" }, "suspended") : el("span");
    box.append(el("div", {
      class: "twin" + (tw.name === state.selected ? " selected" : ""),
      "data-twin": tw.name,
      onclick: () => selectTwin(tw.name),
    }, el("h3", {}, tw.name, status), kv));
  }
}

async function selectTwin(name) {
  state.selected = name;
  if (name) localStorage.setItem("doppel.twin", name);
  for (const c of document.querySelectorAll(".twin")) c.classList.toggle("selected", c.dataset.twin === name);
  $("#twin-title").textContent = name || "No twins";
  $("#reload-out").textContent = "";
  renderTagTable();
  await buildCharts();
}

function canWrite() {
  const role = state.plant && state.plant.you.role;
  return role === "operator" || role === "engineer";
}

// A setpoint for a writable tag: a command through the guard, whose outcome
// (done, rejected with the reason, shadow, failed) is shown next to it.
function setpointCell(t) {
  const td = el("td", { class: "sp" });
  if (!t.writable || !canWrite()) return td;
  const numeric = typeof t.value === "number" ||
    (t.limits && (t.limits.min !== null || t.limits.max !== null));
  const input = el("input", { type: numeric ? "number" : "text", step: "any", "aria-label": "new value for " + t.name });
  const out = el("span", { class: "outcome" });
  const send = async () => {
    let value = input.value.trim();
    if (value === "") return;
    if (input.type === "number" || /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(value)) value = Number(value);
    else if (value === "true" || value === "false") value = value === "true";
    out.textContent = "…";
    try {
      const r = await api("/api/v1/commands", { method: "POST", body: JSON.stringify({ tag: t.name, value }) });
      out.textContent = r.outcome;
      out.className = "outcome ok";
    } catch (e) {
      const r = e.body;
      out.textContent = r && r.outcome ? r.outcome + ": " + r.reason : e.message;
      out.className = "outcome failed";
    }
  };
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") send(); });
  td.append(input, el("button", { type: "button", class: "small set", onclick: send }, "Set"), out);
  return td;
}

function renderTagTable() {
  const body = $("#tag-table tbody");
  body.replaceChildren();
  if (!state.selected) return;
  for (const t of twinTags(state.selected)) {
    const m = mark(t);
    body.append(el("tr", { class: m, "data-tag": t.name },
      el("td", {}, t.name.slice(state.selected.length + 1)),
      el("td", { class: "v" }, fmtValue(t.value)),
      el("td", { class: "u" }, t.unit || ""),
      el("td", {}, el("span", { class: "q " + m }, m)),
      el("td", { class: "u" }, fmtTime(t.ts)),
      setpointCell(t)));
  }
}

// ---- charts ----------------------------------------------------------------------

let chartGeneration = 0;

async function buildCharts() {
  // A newer call (reconnect, twin switch) wins: an older one still waiting
  // for history stops adding charts.
  const gen = ++chartGeneration;
  if (chartObserver) chartObserver.disconnect();
  for (const c of state.charts.values()) c.u.destroy();
  state.charts.clear();
  const box = $("#charts");
  box.replaceChildren();
  if (!state.selected || typeof uPlot === "undefined") return;
  const numeric = twinTags(state.selected).filter((t) => typeof t.value === "number" && t.history > 0);
  for (const t of numeric) {
    const holder = el("div", { class: "chart" }, el("h4", {}, t.name + (t.unit ? " (" + t.unit + ")" : "")));
    box.append(holder);
    let hist = { samples: [] };
    try { hist = await api("/api/v1/tags/" + encodeURIComponent(t.name) + "/history?max=" + CHART_POINTS); } catch (e) { /* keep empty */ }
    if (gen !== chartGeneration) return;
    const xs = [], ys = [];
    for (const [ts, v] of hist.samples) { xs.push(ts / 1000); ys.push(typeof v === "number" ? v : null); }
    const u = new uPlot({
      width: Math.max(280, holder.clientWidth - 12), height: 160,
      scales: { x: { time: true } },
      legend: { show: false },
      series: [{}, { stroke: "#1f5fbf", width: 1.5, spanGaps: false }],
      axes: [{ size: 30 }, { size: 50 }],
    }, [xs, ys], holder);
    state.charts.set(t.name, { u, xs, ys });
    if (chartObserver) chartObserver.observe(holder);
  }
}

function resizeCharts() {
  for (const c of state.charts.values()) {
    const w = c.u.root.parentElement.clientWidth - 12;
    if (w > 100 && Math.abs(w - c.u.width) > 1) c.u.setSize({ width: w, height: 160 });
  }
}
// Charts follow their boxes: window resizes, rotation, the grid reflowing.
const chartObserver = typeof ResizeObserver === "function" ? new ResizeObserver(resizeCharts) : null;
window.addEventListener("resize", resizeCharts);

function chartAppend(name, ts, value) {
  const c = state.charts.get(name);
  if (!c) return;
  c.xs.push(ts / 1000);
  c.ys.push(typeof value === "number" ? value : null);
  if (c.xs.length > CHART_POINTS) { c.xs.shift(); c.ys.shift(); }
  c.dirty = true;
}

// ---- live updates ------------------------------------------------------------------

function render() {
  if (!state.dirty) return;
  state.dirty = false;
  for (const node of document.querySelectorAll("[data-tag]")) {
    const t = state.tags.get(node.dataset.tag);
    if (!t) continue;
    const m = mark(t);
    if (node.tagName === "TR") {
      node.className = m;
      node.children[1].textContent = fmtValue(t.value);
      node.children[3].firstChild.className = "q " + m;
      node.children[3].firstChild.textContent = m;
      node.children[4].textContent = fmtTime(t.ts);
    } else {
      node.className = m;
      node.textContent = fmtValue(t.value) + (t.unit ? " " + t.unit : "");
    }
  }
  for (const c of state.charts.values()) {
    if (c.dirty) { c.u.setData([c.xs, c.ys]); c.dirty = false; }
  }
}

function onTag(msg) {
  const d = JSON.parse(msg.data);
  const t = state.tags.get(d.tag);
  if (!t) { loadAll().catch(() => {}); return; }
  t.value = d.value;
  t.quality = d.quality;
  t.ts = d.ts;
  chartAppend(d.tag, d.ts, d.value);
  state.dirty = true;
}

function onEvent(msg) {
  const e = JSON.parse(msg.data);
  state.events.push(e);
  if (state.events.length > 500) state.events.shift();
  renderEvents();
  if (e.kind === "alarm") loadAlarms();
  if (e.kind === "reload" || e.kind === "suspended") api("/api/v1/twins").then((t) => { state.twins = t; renderTwins(); });
}

function setConn(up, text) {
  const c = $("#conn");
  c.className = "conn " + (up ? "up" : "down");
  c.textContent = text;
}

function connect() {
  if (state.source) state.source.close();
  let url = "/api/v1/stream";
  if (state.token) url += "?token=" + encodeURIComponent(state.token);
  const es = new EventSource(url);
  state.source = es;
  es.addEventListener("hello", () => {
    setConn(true, "live");
    loadAll().catch((e) => setConn(false, e.message));
  });
  es.addEventListener("tag", onTag);
  es.addEventListener("event", onEvent);
  es.addEventListener("command", onEvent);
  es.onerror = () => {
    setConn(false, "reconnecting");
    // A refused stream (bad token) closes for good: probe to show why.
    if (es.readyState === EventSource.CLOSED) {
      api("/api/v1/plant").catch((e) => setConn(false, e.message));
      setTimeout(connect, 3000);
    }
  };
}

// ---- guard and reload (engineer) --------------------------------------------------

function renderGuard(g) {
  const b = $("#guard-badge");
  state.guard = g;
  if (!g) { b.classList.add("hidden"); return; }
  const off = !g.writes_enabled;
  b.textContent = off ? "writes off" : "shadow mode";
  b.classList.toggle("off", off);
  b.classList.toggle("hidden", !off && !g.shadow);
  $("#shadow-btn").textContent = g.shadow ? "leave shadow" : "shadow";
}

$("#shadow-btn").addEventListener("click", async () => {
  try {
    const g = await api("/api/v1/guard", { method: "POST", body: JSON.stringify({ shadow: !(state.guard && state.guard.shadow) }) });
    renderGuard({ writes_enabled: g.writes_enabled, shadow: g.shadow });
  } catch (e) { $("#guard-badge").textContent = e.message; }
});

$("#reload-btn").addEventListener("click", async () => {
  const out = $("#reload-out");
  out.textContent = "…";
  try {
    await api("/api/v1/twins/" + encodeURIComponent(state.selected) + "/reload", { method: "POST" });
    out.textContent = "reloaded";
    out.className = "outcome ok";
  } catch (e) {
    out.textContent = (e.body && e.body.error) || e.message;
    out.className = "outcome failed";
  }
});

setInterval(() => {
  if (state.plant && state.plant.guard) api("/api/v1/guard").then(renderGuard, () => {});
}, 5000);

// ---- alarms ------------------------------------------------------------------------

async function loadAlarms() {
  let list = [];
  try {
    list = await api("/api/v1/alarms");
    $("#alarm-note").textContent = list.length ? "" : "No alarms declared.";
  } catch (e) {
    $("#alarm-note").textContent = e.message;
  }
  state.alarms = list;
  renderAlarms();
}

async function alarmAction(a, action) {
  const path = "/api/v1/alarms/" + encodeURIComponent(a.twin) + "/" + encodeURIComponent(a.name) + "/" + action;
  try {
    await api(path, { method: "POST", body: action === "shelve" ? JSON.stringify({ duration: "30min" }) : undefined });
  } catch (e) {
    $("#alarm-note").textContent = action + " failed: " + e.message;
  }
  loadAlarms();
}

function renderAlarms() {
  const body = $("#alarm-table tbody");
  body.replaceChildren();
  let unacked = 0;
  const order = { unacked: 0, rtn_unacked: 1, acked: 2, normal: 3 };
  const list = [...state.alarms].sort((a, b) => (order[a.state] ?? 9) - (order[b.state] ?? 9) || a.priority - b.priority);
  for (const a of list) {
    const needsAck = a.state === "unacked" || a.state === "rtn_unacked";
    if (needsAck && !a.shelved) unacked++;
    const actions = el("td");
    if (needsAck) actions.append(el("button", { class: "primary ack", type: "button", onclick: () => alarmAction(a, "ack") }, "Acknowledge"));
    if (!a.shelved && a.state !== "normal") actions.append(" ", el("button", { type: "button", onclick: () => alarmAction(a, "shelve") }, "Shelve 30 min"));
    if (a.shelved) actions.append(el("button", { type: "button", onclick: () => alarmAction(a, "unshelve") }, "Unshelve"));
    const stateText = a.state.replace("_", " ") + (a.shelved ? " (shelved)" : "") + (a.acked_by ? " · " + a.acked_by : "");
    body.append(el("tr", { class: needsAck ? "unacked" : "", "data-alarm": a.twin + "." + a.name },
      el("td", {}, a.twin),
      el("td", {}, a.message || a.name),
      el("td", { class: "sev-" + a.severity }, a.severity),
      el("td", { class: "state" }, stateText),
      el("td", {}, fmtTime(toMs(a.since))),
      el("td", {}, fmtValue(a.value) + " / " + fmtValue(a.limit)),
      actions));
  }
  const badge = $("#alarm-badge");
  badge.textContent = unacked + " alarm" + (unacked === 1 ? "" : "s");
  badge.classList.toggle("hidden", unacked === 0);
}

// ---- drivers and events ----------------------------------------------------------------

async function loadDrivers() {
  let list = [];
  try { list = await api("/api/v1/drivers"); } catch (e) { return; }
  const box = $("#drivers");
  box.replaceChildren();
  for (const d of list) {
    const healthy = d.bad === 0 && d.uncertain === 0;
    const kv = el("div", { class: "kv" }, el("span", {}, "tags"), el("b", {}, String(d.tags)),
      el("span", {}, "bad"), el("b", {}, String(d.bad)), el("span", {}, "uncertain"), el("b", {}, String(d.uncertain)));
    for (const [k, v] of Object.entries(d.stats)) kv.append(el("span", {}, k), el("b", {}, fmtValue(v)));
    box.append(el("div", { class: "card", "data-device": d.name },
      el("h3", {}, d.name + " · " + d.driver),
      el("div", { class: "health " + (healthy ? "ok" : "bad") }, healthy ? "healthy" : "degraded"),
      kv));
  }
}

async function loadEvents() {
  try { state.events = await api("/api/v1/events?max=200"); } catch (e) { return; }
  renderEvents();
}

function renderEvents() {
  const body = $("#event-table tbody");
  body.replaceChildren();
  for (const e of [...state.events].reverse().slice(0, 200)) {
    body.append(el("tr", {}, el("td", {}, fmtTime(toMs(e.ts || e.done_ts))), el("td", {}, e.twin || (e.tag || "")),
      el("td", {}, e.kind || ("command " + e.outcome)), el("td", {}, e.text || (e.origin + ": " + e.tag + " = " + e.value + " " + (e.reason || "")))));
  }
}

// ---- start ---------------------------------------------------------------------------

setInterval(() => {
  $("#clock").textContent = new Date().toLocaleTimeString();
  state.dirty = true; // re-evaluate stale marks
}, 1000);
setInterval(() => { if (!$("#tab-drivers").classList.contains("hidden")) loadDrivers(); }, 5000);
(function frame() { render(); requestAnimationFrame(frame); })();
connect();
