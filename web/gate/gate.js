// The gate: scan a ticket (camera, keyboard-wedge scanner or typed), show the verdict from
// two metres, keep working offline. See docs/pages.md#the-gate-page-gate.
import { Api, Problem, Unreachable, nextLink, formatTime, el } from "../shared/api.js";
import { tryKey } from "../shared/signin.js";
import { Book, forgetBooks, message } from "./book.js";

const SETTINGS_KEY = "tickets.gate";
// How long a scan waits for the service before the gate decides offline.
const ONLINE_TIMEOUT_MS = Number(localStorage.getItem("tickets.gate.timeoutMs")) || 1500;
const SYNC_EVERY_MS = 5000;
// The camera sees a held ticket many times a second: one scan per code per pause.
const SAME_CODE_PAUSE_MS = 2500;
const VERDICT_MS = { admitted: 1500, offline: 2000, refused: 3500 };
const RECENT = 20;
const FEED_PAGES_PER_SYNC = 50;

const $ = (id) => document.getElementById(id);
let settings = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "null");
let api = new Api(settings?.key || "");
let book = null;
let online = true;
let syncing = false;
let syncTimer = null;
let hideTimer = null;
let camera = { stream: null, detector: null, on: false, lastCode: "", lastAt: 0 };
const local = { admitted: 0, refused: 0 };
// For the browser tests and for anyone measuring: decoded code to rendered verdict.
const gate = (window.__gate = { timings: [], verdicts: [], synced: 0, detector: null, listLoads: 0 });

function show(section) {
  for (const id of ["signin", "pick", "scanner"]) $(id).hidden = id !== section;
  $("change").hidden = section !== "scanner";
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
  await loadLists();
  select.focus();
}

async function loadLists() {
  const eventId = $("event").value;
  // Until this event's lists arrive, none shows: Start must not take another event's list.
  $("list").replaceChildren();
  $("start").disabled = true;
  try {
    const lists = eventId ? (await api.get(`/event/${eventId}/list`)).body : [];
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
  show("scanner");
  renderWhere();
  renderCounters();
  renderConflicts();
  $("code").focus();
  sync();
  clearInterval(syncTimer);
  syncTimer = setInterval(sync, SYNC_EVERY_MS);
  startCamera();
}

function renderWhere() {
  const list = book.state.list;
  const name = list ? list.name : settings.list;
  $("where").textContent = `${name} · ${settings.direction === "entry" ? "Entry" : "Exit"}`;
}

function setOnline(value) {
  online = value;
  const net = $("net");
  net.textContent = value ? "Online" : "Offline: checking on this device";
  net.className = value ? "net online" : "net offline";
  $("queue").textContent = book && book.state.queue.length ? `${book.state.queue.length} to upload` : "";
}

function renderCounters() {
  const list = book?.state.list;
  const refused = list ? Object.values(list.refused || {}).reduce((a, b) => a + b, 0) : 0;
  $("admitted").textContent = String((list?.admitted ?? 0) + local.admitted);
  $("refused").textContent = String(refused + local.refused);
  $("inside").textContent = String((list?.inside ?? 0) + local.admitted);
  $("queue").textContent = book && book.state.queue.length ? `${book.state.queue.length} to upload` : "";
}

function listName(id) {
  return book.state.listNames[id] || id || "";
}

function bodyOf(scan) {
  return { ticket: scan.ticket, list: scan.list, direction: scan.direction, scanned_at: scan.scanned_at };
}

async function onCode(raw, source) {
  const t0 = performance.now();
  const code = raw.trim();
  if (!code) return;
  if (source === "camera") {
    if (code === camera.lastCode && Date.now() - camera.lastAt < SAME_CODE_PAUSE_MS) return;
    camera.lastCode = code;
  }
  camera.lastAt = Date.now();
  const scan = { id: crypto.randomUUID(), ticket: code, list: settings.list, direction: settings.direction,
                 scanned_at: Date.now() / 1000 };
  let verdict = null;
  if (online) {
    try {
      const answer = (await api.post("/checkin", bodyOf(scan), { timeoutMs: ONLINE_TIMEOUT_MS,
                                                                  idempotencyKey: scan.id })).body;
      verdict = verdictOf(answer);
      book.noteOnline(answer, scan);
      refreshCounters();
    } catch (err) {
      if (err instanceof Problem) {
        verdict = { kind: "refused", reason: err.body.reason || err.body.type, message: err.message, detail: "" };
      } else if (!(err instanceof Unreachable)) {
        throw err;
      } else {
        setOnline(false);
      }
    }
  }
  if (verdict === null) verdict = await decideOffline(scan);
  verdict.source = source;
  render(verdict, t0, online ? "online" : "offline");
}

function verdictOf(answer) {
  if (answer.admitted) {
    return { kind: "admitted", reason: null, message: answer.direction === "exit" ? "Exit recorded." : "Welcome in.",
             detail: answer.ticket?.type ? `Type: ${answer.ticket.type}` : "", ticket: answer.ticket?.id };
  }
  let detail = "";
  if (answer.reason === "already_used" && answer.used_at) {
    detail = `Used at ${formatTime(answer.used_at)}${answer.used_list ? ` at ${listName(answer.used_list)}` : ""}.`;
  }
  return { kind: "refused", reason: answer.reason, message: answer.message, detail, ticket: answer.ticket?.id };
}

async function decideOffline(scan) {
  const d = await book.decide(scan.ticket, scan.direction, scan.scanned_at);
  if (d.admitted) {
    book.admitOffline(scan, d.ticketId);
    local.admitted += scan.direction === "entry" ? 1 : 0;
    renderCounters();
    return { kind: "offline", reason: null, message: "Checked on this device; uploads when back online.",
             detail: d.claims.type ? `Type: ${d.claims.type}` : "", ticket: d.ticketId };
  }
  local.refused += 1;
  renderCounters();
  let detail = "Checked on this device (offline).";
  if (d.reason === "already_used" && d.usedAt) {
    detail = `Used at ${formatTime(d.usedAt)} at ${d.here ? "this gate, offline" : listName(d.usedList)}.`;
  }
  return { kind: "refused", reason: d.reason, message: message(d.reason), detail, ticket: d.ticketId };
}

const WORDS = { admitted: "Admitted", offline: "Admitted offline", refused: "Refused" };

function render(verdict, t0, mode) {
  const box = $("verdict");
  box.className = `verdict ${verdict.kind}`;
  box.querySelector(".verdict-word").textContent = WORDS[verdict.kind];
  box.querySelector(".verdict-message").textContent = verdict.message;
  box.querySelector(".verdict-detail").textContent = verdict.detail;
  box.hidden = false;
  $("announce").textContent = `${WORDS[verdict.kind]}. ${verdict.message} ${verdict.detail}`;
  signal(verdict.kind);
  addRecent(verdict);
  gate.verdicts.push({ kind: verdict.kind, reason: verdict.reason, mode, source: verdict.source });
  // The frame after the verdict's frame: the verdict has been painted.
  requestAnimationFrame(() => requestAnimationFrame(() => {
    gate.timings.push({ mode, ms: performance.now() - t0, kind: verdict.kind });
  }));
  clearTimeout(hideTimer);
  hideTimer = setTimeout(hideVerdict, VERDICT_MS[verdict.kind]);
}

function hideVerdict() {
  $("verdict").hidden = true;
  $("code").focus();
}

function addRecent(verdict) {
  const item = el("li", { class: `recent ${verdict.kind}` },
    el("span", { class: "when", text: formatTime(Date.now() / 1000) }), " ",
    el("strong", { text: WORDS[verdict.kind] }), " ",
    el("span", { text: verdict.reason ? message(verdict.reason) : verdict.message }), " ",
    el("span", { class: "ticket", text: verdict.ticket ? verdict.ticket.slice(0, 13) : "" }));
  const recent = $("recent");
  recent.prepend(item);
  while (recent.children.length > RECENT) recent.lastElementChild.remove();
}

// A tone and a buzz: high and short for admitted, two low ones for refused.
let audio = null;
function signal(kind) {
  try {
    audio = audio || new AudioContext();
    const tones = kind === "refused" ? [220, 0, 220] : kind === "offline" ? [660, 520] : [880];
    let at = audio.currentTime;
    for (const hz of tones) {
      if (hz) {
        const osc = audio.createOscillator(), gain = audio.createGain();
        osc.frequency.value = hz;
        gain.gain.value = 0.2;
        osc.connect(gain).connect(audio.destination);
        osc.start(at);
        osc.stop(at + 0.12);
      }
      at += 0.15;
    }
  } catch { /* no audio output: the screen says it */ }
  if (navigator.vibrate) navigator.vibrate(kind === "refused" ? [200, 100, 200] : [80]);
}

// --- keeping the offline copy, uploading the queue --------------------------------------

async function refreshCounters() {
  try {
    book.state.list = (await api.get(`/event/${settings.event}/list/${settings.list}`)).body;
    local.admitted = 0;
    local.refused = 0;
    renderCounters();
  } catch { /* the next sync will */ }
}

async function sync() {
  if (syncing || !book) return;
  syncing = true;
  try {
    const [keys, event, lists] = await Promise.all([
      api.get("/keys"), api.get(`/event/${settings.event}`), api.get(`/event/${settings.event}/list`)]);
    book.setKeys(keys.body);
    book.state.event = event.body;
    for (const l of lists.body) book.state.listNames[l.id] = l.name;
    book.state.list = lists.body.find((l) => l.id === settings.list) || book.state.list;
    await pullChanges();
    book.save();
    if (await uploadQueue()) {
      book.state.list = (await api.get(`/event/${settings.event}/list/${settings.list}`)).body;
    }
    local.admitted = 0;
    local.refused = 0;
    setOnline(true);
    gate.synced += 1;
    renderWhere();
  } catch (err) {
    if (err instanceof Unreachable) setOnline(false);
    else console.warn("sync", err);
  } finally {
    syncing = false;
    renderCounters();
  }
}

// The book from the service's tickets: on the first sync, and whenever the change feed was
// trimmed past this device's cursor (the feed alone would miss what was trimmed away).
async function readBook() {
  const tickets = [];
  let cursor = null, changesAfter = null;
  do {
    const q = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
    const r = await api.get(`/event/${settings.event}/list/${settings.list}/book?limit=1000${q}`);
    changesAfter = changesAfter ?? r.body.changes_after;
    tickets.push(...r.body.tickets);
    cursor = r.body.next;
  } while (cursor);
  book.load(tickets, changesAfter);
  gate.bookReads = (gate.bookReads || 0) + 1;
}

async function pullChanges() {
  if (!book.state.cursor) await readBook();
  for (let page = 0; page < FEED_PAGES_PER_SYNC; page++) {
    const after = `&after=${encodeURIComponent(book.state.cursor)}`;
    let r;
    try {
      r = await api.get(`/changes?event=${settings.event}&limit=1000${after}`);
    } catch (err) {
      if (err instanceof Problem && err.status === 410) {  // trimmed past the cursor: read the book again
        await readBook();
        continue;
      }
      throw err;
    }
    for (const change of r.body) book.apply(change);
    const next = new URL(nextLink(r.headers), location.href).searchParams.get("after");
    const moved = next !== book.state.cursor;
    book.state.cursor = next;
    if (!moved) return;
  }
}

// Uploads every queued scan; how many went up.
async function uploadQueue() {
  let uploaded = 0;
  while (book.state.queue.length) {
    const scan = book.state.queue[0];
    let answer = null, refusedDetail = "";
    try {
      answer = (await api.post("/checkin", { ...bodyOf(scan), offline: true },
                               { idempotencyKey: `${scan.id}:upload`, timeoutMs: 5000 })).body;
    } catch (err) {
      if (!(err instanceof Problem)) throw err;
      refusedDetail = err.message;
    }
    book.state.queue.shift();
    if (answer && answer.conflict) {
      recordConflict(scan, message(answer.reason), answer.used_at ? `first used at ${formatTime(answer.used_at)}`
        + (answer.used_list ? ` at ${listName(answer.used_list)}` : "") : "");
    } else if (!answer) {
      recordConflict(scan, "the upload was refused", refusedDetail);
    }
    book.save();
    uploaded += 1;
  }
  return uploaded;
}

function recordConflict(scan, what, detail) {
  book.state.conflicts.unshift({ ticket: scan.ticketId || scan.ticket.slice(0, 40), scanned_at: scan.scanned_at,
                                 what, detail });
  book.state.conflicts = book.state.conflicts.slice(0, 100);
  renderConflicts();
  $("announce").textContent = `Conflict: a ticket admitted offline at ${formatTime(scan.scanned_at)}: ${what}`;
}

function renderConflicts() {
  const items = book.state.conflicts.map((c) => el("li", { class: "conflict" },
    el("strong", { text: "Conflict" }), " ",
    el("span", { text: `admitted offline here at ${formatTime(c.scanned_at)}. ${c.what}${c.detail ? ` (${c.detail})` : ""}` }),
    " ", el("span", { class: "ticket", text: c.ticket.slice(0, 13) })));
  $("conflicts").replaceChildren(...items);
  $("conflicts-section").hidden = items.length === 0;
}

// --- the camera -------------------------------------------------------------------------

async function makeDetector() {
  if ("BarcodeDetector" in window) {
    try {
      if ((await window.BarcodeDetector.getSupportedFormats()).includes("qr_code")) {
        gate.detector = "native";
        return new window.BarcodeDetector({ formats: ["qr_code"] });
      }
    } catch { /* fall through to the polyfill */ }
  }
  const lib = window.BarcodeDetectionAPI;
  lib.prepareZXingModule({
    overrides: {
      // The reader's WebAssembly, vendored beside the page: never a CDN.
      locateFile: (path, prefix) => (path.endsWith(".wasm")
        ? new URL(`../vendor/zxing-wasm/${path}`, import.meta.url).href : prefix + path),
    },
    fireImmediately: true,
  });
  gate.detector = "zxing-wasm";
  return new lib.BarcodeDetector({ formats: ["qr_code"] });
}

async function startCamera() {
  const status = $("camera-status");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    status.textContent = "No camera here: use a hand scanner or type the code.";
    return;
  }
  try {
    camera.detector = camera.detector || await makeDetector();
    camera.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
    const video = $("video");
    video.srcObject = camera.stream;
    await video.play();
    camera.on = true;
    $("camera-toggle").textContent = "Stop camera";
    status.textContent = `Camera on (${gate.detector === "native" ? "built-in decoder" : "ZXing decoder"}).`;
    detectLoop();
  } catch (err) {
    status.textContent = `Camera unavailable (${err.name || err}): use a hand scanner or type the code.`;
  }
}

function stopCamera() {
  camera.on = false;
  if (camera.stream) for (const track of camera.stream.getTracks()) track.stop();
  camera.stream = null;
  $("camera-toggle").textContent = "Start camera";
  $("camera-status").textContent = "Camera off.";
}

async function detectLoop() {
  const video = $("video");
  while (camera.on) {
    if (video.readyState >= 2) {
      try {
        for (const found of await camera.detector.detect(video)) {
          if (found.rawValue) await onCode(found.rawValue, "camera");
        }
      } catch { /* a frame that cannot be read: the next one */ }
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
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
$("camera-toggle").addEventListener("click", () => (camera.on ? stopCamera() : startCamera()));
$("change").addEventListener("click", () => { stopCamera(); clearInterval(syncTimer); showPick(); });
// Signing out hands the device to the next key: this key's queued scans go up first (or are
// given up, if the person says so), and no book stays behind for the next key to upload.
$("signout").addEventListener("click", async () => {
  stopCamera();
  clearInterval(syncTimer);
  if (book && book.state.queue.length) {
    try { await uploadQueue(); } catch { /* offline: asked below */ }
    const left = book.state.queue.length;
    if (left && !window.confirm(`${left} scan(s) admitted offline are not uploaded yet and will be lost. Sign out?`)) {
      return;  // kept: Start scanning picks up where it was
    }
  }
  forgetBooks();
  book = null;
  localStorage.removeItem(SETTINGS_KEY);
  settings = null;
  show("signin");
});

if ("serviceWorker" in navigator) navigator.serviceWorker.register("sw.js").catch(() => {});

if (settings && settings.list) enterScanner();
else if (settings) showPick().catch(() => show("signin"));
else show("signin");
