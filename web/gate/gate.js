// The gate: scan a ticket (camera, keyboard-wedge scanner or typed), show the verdict from
// two metres, keep working offline. See docs/pages.md#the-gate-page-gate.
// This module signs in (or enrols, device.js), picks the list and wires the page; the camera
// (camera.js), the verdicts (verdicts.js), keeping the book up and uploading (sync.js) and
// the offline decision (book.js) each live in their own.
import { Api, Problem, Unreachable, el } from "../shared/api.js";
import { tryKey } from "../shared/signin.js";
import { Book, forgetBooks } from "./book.js";
import { Camera } from "./camera.js";
import { enrol, enrolmentCode, isRevoked } from "./device.js";
import { Sync, bodyOf } from "./sync.js";
import { hideVerdict, offlineVerdictOf, render, verdictOf } from "./verdicts.js";

const SETTINGS_KEY = "tickets.gate";
// How long a scan waits for the service before the gate decides offline.
const ONLINE_TIMEOUT_MS = Number(localStorage.getItem("tickets.gate.timeoutMs")) || 1500;
const SYNC_EVERY_MS = 5000;

const $ = (id) => document.getElementById(id);
let settings = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "null");
let api = new Api(settings?.key || "");
let book = null;
let sync = null;
let online = true;
let syncTimer = null;
const local = { admitted: 0, refused: 0 };
// For the browser tests and for anyone measuring: decoded code to rendered verdict.
const gate = (window.__gate = { timings: [], verdicts: [], synced: 0, detector: null, listLoads: 0 });
const camera = new Camera({ video: $("video"), toggle: $("camera-toggle"), status: $("camera-status"),
                            onCode: (code) => onCode(code, "camera"), probe: gate });
const enrolCamera = new Camera({ video: $("enrol-video"), toggle: $("enrol-camera"), status: $("enrol-status"),
                                 onCode: (code) => enrolWith(code), probe: gate });

function show(section) {
  for (const id of ["signin", "pick", "scanner", "revoked"]) $(id).hidden = id !== section;
  $("change").hidden = section !== "scanner";
}

// --- enrolment, and revocation -----------------------------------------------------------

async function enrolWith(text) {
  const code = enrolmentCode(text);
  if (!code) {
    $("enrol-status").textContent = "This is not an enrolment code.";
    return;
  }
  enrolCamera.stop();
  try {
    const { device, key } = await enrol(code);
    api = new Api(key);
    const list = device.lists.length === 1 ? device.lists[0] : null;
    settings = { key, device, event: device.event, list, direction: device.direction || "entry" };
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
    gate.enrolled = device.id;
    if (settings.event && settings.list) enterScanner();
    else await showPick();
  } catch (err) {
    $("enrol-status").textContent = err instanceof Problem && err.status === 403
      ? "This code was used already, has expired or is unknown: ask the box office for a new one."
      : `Not enrolled: ${err.message}`;
  }
}

// The service says this device's key was revoked (or replaced): stop, and leave nothing of
// this key on the device. Its queued offline scans cannot go up with a revoked key: the page
// says how many were lost, for the supervisor.
function revoked() {
  camera.stop();
  clearInterval(syncTimer);
  const lost = book ? book.state.queue.length : 0;
  forgetBooks();
  localStorage.removeItem(SETTINGS_KEY);
  book = null;
  sync = null;
  settings = null;
  api = new Api("");
  gate.revoked = true;
  $("where").textContent = "";
  $("queue").textContent = "";
  $("revoked-detail").textContent = "Scanning has stopped and this device's copy of the tickets was wiped."
    + (lost ? ` ${lost} scan(s) admitted offline could not be uploaded with a revoked key and were discarded:`
      + " tell the supervisor." : "");
  show("revoked");
}

// --- sign in, pick a list ---------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  const { api: candidate, error } = await tryKey(key, "This key may not scan.");
  $("signin-error").textContent = error;
  if (!candidate) return;
  api = candidate;
  settings = { key, event: null, list: null, direction: "entry" };
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
  await showPick();
}

async function showPick() {
  show("pick");
  const events = (await api.get("/event?limit=1000")).body;
  const select = $("event");
  select.replaceChildren(...events.map((e) => el("option", { value: e.id, text: `${e.name} (${e.id})` })));
  if (settings.event && events.some((e) => e.id === settings.event)) select.value = settings.event;
  // What the device is bound to is not the steward's to change.
  const device = settings.device;
  select.disabled = Boolean(device && device.event);
  for (const radio of document.querySelectorAll("input[name=direction]")) {
    radio.disabled = Boolean(device && device.direction);
    if (device && device.direction) radio.checked = radio.value === device.direction;
  }
  await loadLists();
  select.focus();
}

async function loadLists() {
  const eventId = $("event").value;
  // Until this event's lists arrive, none shows: Start must not take another event's list.
  $("list").replaceChildren();
  $("start").disabled = true;
  try {
    const bound = settings.device ? settings.device.lists : [];
    const lists = (eventId ? (await api.get(`/event/${eventId}/list`)).body : [])
      .filter((l) => !bound.length || bound.includes(l.id));
    // A late answer for an event picked before this one changes nothing: the later pick's
    // own load fills the lists.
    if ($("event").value !== eventId) return;
    $("list").replaceChildren(...lists.map((l) => el("option", { value: l.id, text: l.name })));
    if (settings.list && lists.some((l) => l.id === settings.list)) $("list").value = settings.list;
    $("start").disabled = lists.length === 0;
    $("pick-note").textContent = lists.length ? "" : "This event has no check-in list yet.";
  } finally {
    gate.listLoads += 1;
  }
}

function startScanning(event) {
  event.preventDefault();
  const direction = document.querySelector("input[name=direction]:checked").value;
  settings = { ...settings, event: $("event").value, list: $("list").value, direction };
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
  enterScanner();
}

// --- the scanner ------------------------------------------------------------------------

function enterScanner() {
  book = new Book(settings.list);
  sync = new Sync({ api, book, event: settings.event, list: settings.list, local, probe: gate,
                    view: { setOnline, renderCounters, renderWhere, revoked } });
  show("scanner");
  renderWhere();
  renderCounters();
  sync.renderConflicts();
  $("code").focus();
  sync.run();
  clearInterval(syncTimer);
  syncTimer = setInterval(() => sync.run(), SYNC_EVERY_MS);
  camera.start();
}

function renderWhere() {
  const list = book.state.list;
  const name = list ? list.name : settings.list;
  const device = settings.device ? `${settings.device.name} · ` : "";
  $("where").textContent = `${device}${name} · ${settings.direction === "entry" ? "Entry" : "Exit"}`;
}

function setOnline(value) {
  online = value;
  const net = $("net");
  net.textContent = value ? "Online" : "Offline: checking on this device";
  net.className = value ? "net online" : "net offline";
  renderQueue();
}

function renderQueue() {
  $("queue").textContent = book && book.state.queue.length ? `${book.state.queue.length} to upload` : "";
}

function renderCounters() {
  const list = book?.state.list;
  const refused = list ? Object.values(list.refused || {}).reduce((a, b) => a + b, 0) : 0;
  $("admitted").textContent = String((list?.admitted ?? 0) + local.admitted);
  $("refused").textContent = String(refused + local.refused);
  $("inside").textContent = String((list?.inside ?? 0) + local.admitted);
  renderQueue();
}

async function onCode(raw, source) {
  const t0 = performance.now();
  const code = raw.trim();
  if (!code || !camera.fresh(code, source === "camera")) return;
  if (enrolmentCode(code)) return;  // an enrolment code held to the camera is not a ticket
  const scan = { id: crypto.randomUUID(), ticket: code, list: settings.list, direction: settings.direction,
                 scanned_at: Date.now() / 1000 };
  const listName = (id) => sync.listName(id);
  let verdict = null;
  if (online) {
    try {
      const answer = (await api.post("/checkin", bodyOf(scan), { timeoutMs: ONLINE_TIMEOUT_MS,
                                                                  idempotencyKey: scan.id })).body;
      verdict = verdictOf(answer, listName);
      book.noteOnline(answer, scan);
      sync.refreshCounters();
    } catch (err) {
      if (isRevoked(err)) {
        revoked();
        return;
      }
      if (err instanceof Problem) {
        verdict = { kind: "refused", reason: err.body.reason || err.body.type, message: err.message, detail: "" };
      } else if (!(err instanceof Unreachable)) {
        throw err;
      } else {
        setOnline(false);
      }
    }
  }
  if (verdict === null) verdict = await decideOffline(scan, listName);
  verdict.source = source;
  render(verdict, t0, online ? "online" : "offline", gate);
}

async function decideOffline(scan, listName) {
  const d = await book.decide(scan.ticket, scan.direction, scan.scanned_at);
  if (d.admitted) {
    book.admitOffline(scan, d.ticketId);
    local.admitted += scan.direction === "entry" ? 1 : 0;
  } else {
    local.refused += 1;
  }
  renderCounters();
  return offlineVerdictOf(d, listName);
}

// --- wiring -----------------------------------------------------------------------------

$("signin-form").addEventListener("submit", signIn);
$("event").addEventListener("change", loadLists);
$("pick").addEventListener("submit", startScanning);
$("manual").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("code");
  const code = input.value;
  input.value = "";
  onCode(code, "typed");
});
$("verdict").addEventListener("click", hideVerdict);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !$("verdict").hidden) hideVerdict();
  // A hand scanner types into whatever has focus: keep it on the code field.
  if (!$("scanner").hidden && document.activeElement === document.body && event.key.length === 1) $("code").focus();
});
$("camera-toggle").addEventListener("click", () => (camera.on ? camera.stop() : camera.start()));
$("enrol-camera").addEventListener("click", () => (enrolCamera.on ? enrolCamera.stop() : enrolCamera.start()));
$("revoked-ok").addEventListener("click", () => show("signin"));
$("change").addEventListener("click", () => { camera.stop(); clearInterval(syncTimer); showPick(); });
// Signing out hands the device to the next key: this key's queued scans go up first (or are
// given up, if the person says so), and no book stays behind for the next key to upload.
$("signout").addEventListener("click", async () => {
  camera.stop();
  clearInterval(syncTimer);
  if (book && book.state.queue.length) {
    try { await sync.uploadQueue(); } catch { /* offline: asked below */ }
    const left = book.state.queue.length;
    if (left && !window.confirm(`${left} scan(s) admitted offline are not uploaded yet and will be lost. Sign out?`)) {
      return;  // kept: Start scanning picks up where it was
    }
  }
  forgetBooks();
  book = null;
  sync = null;
  localStorage.removeItem(SETTINGS_KEY);
  settings = null;
  show("signin");
});

if ("serviceWorker" in navigator) navigator.serviceWorker.register("sw.js").catch(() => {});

// Opened from an enrolment link (the box office's, or its QR code read by a phone's camera).
const linked = enrolmentCode(location.hash);
if (linked) {
  history.replaceState(null, "", location.pathname);
  show("signin");
  enrolWith(linked);
} else if (settings && settings.list) enterScanner();
else if (settings) showPick().catch(() => show("signin"));
else show("signin");
