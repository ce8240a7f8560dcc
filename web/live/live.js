// The live view of an event for its supervisors, on a phone or a wall screen: one tile per
// list (a gate or an area) with inside against capacity, entries per minute over the last hour
// and refusals by reason; the event's totals; its devices, offline ones flagged.
// It reads GET /event/{id}/live (Server-Sent Events, read with fetch so that the key goes in a
// header), folds each update into its picture as service/live.py says, and reconnects with the
// last id it had (Last-Event-ID), getting what changed since rather than the hour again.
import { el } from "../shared/api.js";
import { tryKey } from "../shared/signin.js";

const SETTINGS_KEY = "tickets.live";
const RETRY_MS = 2000;
const NEAR = 0.9;  // of capacity: the tile turns amber, then red when full
const $ = (id) => document.getElementById(id);
let settings = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "null");
let api = null;
let picture = null;
let lastId = null;
let stream = null;
// What the browser tests read: messages applied, and when.
const probe = (window.__live = { snapshots: 0, updates: 0, connects: 0, lastId: null, applied: [] });

function show(id) {
  for (const section of ["signin", "pick", "board"]) $(section).hidden = section !== id;
  $("signout").hidden = id === "signin";
}

async function signIn(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  const { api: candidate, error } = await tryKey(key, "This key may not read events.");
  $("signin-error").textContent = error;
  if (!candidate) return;
  settings = { key };
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
  api = candidate;
  await showPick();
}

async function showPick() {
  const events = (await api.get("/event?limit=1000")).body;
  $("event").replaceChildren(...events.map((e) => el("option", { value: e.id, text: e.name })));
  const wanted = new URLSearchParams(location.search).get("event");
  if (wanted && events.some((e) => e.id === wanted)) return watch(wanted);
  show("pick");
  $("event").focus();
}

function watch(eventId) {
  show("board");
  history.replaceState(null, "", `?event=${eventId}`);
  picture = null;
  lastId = null;
  connect(eventId);
}

// --- the stream ---------------------------------------------------------------------------

async function connect(eventId) {
  if (stream) stream.abort();
  const abort = (stream = new AbortController());
  while (!abort.signal.aborted) {
    try {
      await readStream(eventId, abort.signal);
    } catch (err) {
      if (abort.signal.aborted) return;
      if (err.status === 401 || err.status === 403) {
        setStatus(err.status === 401 ? "This key is not accepted." : "This key may not watch the event.");
        return;
      }
    }
    if (abort.signal.aborted) return;
    setStatus("Reconnecting…", true);
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

async function readStream(eventId, signal) {
  const headers = { Accept: "text/event-stream" };
  if (settings?.key) headers.Authorization = `Bearer ${settings.key}`;
  if (lastId) headers["Last-Event-ID"] = lastId;
  const response = await fetch(`/event/${eventId}/live`, { headers, signal, cache: "no-store", credentials: "omit" });
  if (!response.ok) throw Object.assign(new Error(`HTTP ${response.status}`), { status: response.status });
  probe.connects += 1;
  setStatus("Live");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the stream ended");
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const message = parseBlock(block);
      if (message) receive(message);
    }
  }
}

function parseBlock(block) {
  let id = null, data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("id: ")) id = line.slice(4);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return null;  // a heartbeat, or the stream's opening comment
  return { id, body: JSON.parse(data) };
}

// Fold a message into the picture, as service/live.py's merge does.
function receive({ id, body }) {
  if (body.type === "snapshot" || !picture) {
    picture = { event: {}, lists: {}, minutes: {}, devices: {} };
    probe.snapshots += body.type === "snapshot" ? 1 : 0;
  }
  if (body.type === "update") probe.updates += 1;
  for (const [name, value] of Object.entries(body)) {
    if (name === "lists" || name === "devices") {
      for (const [key, item] of Object.entries(value)) {
        if (item === null) delete picture[name][key];
        else picture[name][key] = item;
      }
    } else if (name === "minutes") {
      for (const [listId, perMinute] of Object.entries(value)) {
        picture.minutes[listId] = { ...(picture.minutes[listId] || {}), ...perMinute };
      }
    } else {
      picture[name] = value;
    }
  }
  lastId = id;
  probe.lastId = id;
  render();
  probe.applied.push({ at: Date.now(), type: body.type, position: body.position });
  if (probe.applied.length > 200) probe.applied.splice(0, probe.applied.length - 200);  // a wall screen runs for days
}

// --- what the screen shows ----------------------------------------------------------------

function setStatus(text, stale = false) {
  $("status").textContent = text;
  $("status").classList.toggle("stale", stale);
}

function nowMinute() {
  return Math.floor((picture.at ?? Date.now() / 1000) / 60);
}

function perMinute(listId, slot) {
  const now = nowMinute(), per = picture.minutes[listId] || {}, out = [];
  for (let m = now - 59; m <= now; m++) out.push((per[String(m)] || [0, 0, 0])[slot]);
  return out;
}

function sparkline(listId, name) {
  const entries = perMinute(listId, 0), refusals = perMinute(listId, 2);
  const top = Math.max(1, ...entries.map((e, i) => e + refusals[i]));
  const svgNs = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("viewBox", "0 0 120 40");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const last10 = entries.slice(-10).reduce((a, b) => a + b, 0);
  svg.setAttribute("aria-label", `${name}: entries per minute over the last hour, ${last10} in the last 10 minutes`);
  entries.forEach((e, i) => {
    const h = (e / top) * 40, r = (refusals[i] / top) * 40;
    for (const [cls, height, y] of [["entries", h, 40 - h], ["refusals", r, 40 - h - r]]) {
      if (!height) continue;
      const bar = document.createElementNS(svgNs, "rect");
      bar.setAttribute("class", cls);
      bar.setAttribute("x", String(i * 2));
      bar.setAttribute("width", "1.6");
      bar.setAttribute("y", String(y));
      bar.setAttribute("height", String(height));
      svg.append(bar);
    }
  });
  return svg;
}

function tile(list, offline) {
  const { capacity, inside } = list;
  const share = capacity ? inside / capacity : 0;
  const level = capacity && share >= 1 ? "over" : capacity && share >= NEAR ? "near" : "";
  const entries = perMinute(list.id, 0);
  const lastMinute = entries[entries.length - 1], last10 = entries.slice(-10).reduce((a, b) => a + b, 0);
  const refusals = Object.entries(list.refused).sort((a, b) => b[1] - a[1]).slice(0, 3);
  const count = el("p", { class: "count" }, String(inside));
  if (capacity) count.append(el("small", { text: ` / ${capacity}` }));
  const parts = [
    el("h3", { text: list.name }), count,
    el("p", { class: "state", text: level === "over" ? "Full" : level === "near" ? "Near capacity" : capacity ? `${Math.round(share * 100)}% full` : "inside (no capacity)" }),
  ];
  if (capacity) {
    const fill = el("div", { class: "bar-fill" });
    fill.style.width = `${Math.min(100, share * 100)}%`;
    parts.push(el("div", { class: "bar-track", "aria-hidden": "true" }, fill));
  }
  parts.push(el("p", { class: "rate", text: `${lastMinute} entries this minute, ${last10} in 10 min · ${list.exits} exits` }),
    sparkline(list.id, list.name));
  if (refusals.length) {
    parts.push(el("ul", { class: "refusals-list", "aria-label": "Refusals by reason" },
      ...refusals.map(([reason, n]) => el("li", { text: `${n} ${reason.replace(/_/g, " ")}` }))));
  }
  if (offline.length) parts.push(el("p", { class: "offline", text: `Offline: ${offline.join(", ")}` }));
  return el("li", { class: `tile ${level}`, "data-list": list.id }, ...parts);
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  return s < 90 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
}

function render() {
  const lists = Object.values(picture.lists).sort((a, b) => a.name.localeCompare(b.name));
  const devices = Object.values(picture.devices).sort((a, b) => a.name.localeCompare(b.name));
  const offlineBy = {};
  for (const d of devices.filter((d) => d.offline)) {
    for (const listId of d.lists) (offlineBy[listId] ||= []).push(d.name);
  }
  $("title").textContent = `Live · ${picture.event.name || ""}`;
  $("inside").textContent = String(picture.event.inside ?? 0);
  $("admitted").textContent = String(picture.event.admitted ?? 0);
  $("issued").textContent = String(picture.event.issued ?? 0);
  $("refused").textContent = String(lists.reduce((n, l) => n + Object.values(l.refused).reduce((a, b) => a + b, 0), 0));
  $("offline-count").textContent = String(devices.filter((d) => d.offline).length);
  $("tiles").replaceChildren(...lists.map((l) => tile(l, offlineBy[l.id] || [])));
  $("devices").replaceChildren(...devices.map((d) => el("tr", {},
    el("td", { text: d.name }), el("td", { text: d.lists.map((id) => picture.lists[id]?.name || id).join(", ") || "any" }),
    el("td", { text: ago(d.last_seen) }),
    el("td", { class: d.offline ? "offline" : null, text: d.offline ? "Offline" : "Online" }))));
}

// --- wiring -------------------------------------------------------------------------------

$("signin-form").addEventListener("submit", signIn);
$("pick-form").addEventListener("submit", (event) => { event.preventDefault(); watch($("event").value); });
$("signout").addEventListener("click", () => {
  if (stream) stream.abort();
  localStorage.removeItem(SETTINGS_KEY);
  settings = null;
  history.replaceState(null, "", location.pathname);
  show("signin");
});

(async () => {
  if (settings) {
    const { api: candidate } = await tryKey(settings.key, "");
    if (candidate) {
      api = candidate;
      await showPick();
      return;
    }
  }
  show("signin");
})();
