// The verdict a steward reads from two metres: its word, sentence and detail, shown big, said
// to screen readers, sounded and buzzed, and kept in the list of recent scans.
import { formatTime, el } from "../shared/api.js";
import { message } from "./book.js";

const WORDS = { admitted: "Admitted", offline: "Admitted offline", refused: "Refused" };
const SHOWN_MS = { admitted: 1500, offline: 2000, refused: 3500 };
const RECENT = 20;

const $ = (id) => document.getElementById(id);
let hideTimer = null;
let audio = null;

// The service's answer to a scan. listName(id) names a list of the event.
export function verdictOf(answer, listName) {
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

// The book's decision (book.js, decide) for a scan made offline.
export function offlineVerdictOf(d, listName) {
  if (d.admitted) {
    return { kind: "offline", reason: null, message: "Checked on this device; uploads when back online.",
             detail: d.claims.type ? `Type: ${d.claims.type}` : "", ticket: d.ticketId };
  }
  let detail = "Checked on this device (offline).";
  if (d.reason === "already_used" && d.usedAt) {
    detail = `Used at ${formatTime(d.usedAt)} at ${d.here ? "this gate, offline" : listName(d.usedList)}.`;
  }
  return { kind: "refused", reason: d.reason, message: message(d.reason), detail, ticket: d.ticketId };
}

// Shows a verdict; probe gets what the browser tests measure (decoded code to painted verdict).
export function render(verdict, t0, mode, probe) {
  const box = $("verdict");
  box.className = `verdict ${verdict.kind}`;
  box.querySelector(".verdict-word").textContent = WORDS[verdict.kind];
  box.querySelector(".verdict-message").textContent = verdict.message;
  box.querySelector(".verdict-detail").textContent = verdict.detail;
  box.hidden = false;
  $("announce").textContent = `${WORDS[verdict.kind]}. ${verdict.message} ${verdict.detail}`;
  signal(verdict.kind);
  addRecent(verdict);
  probe.verdicts.push({ kind: verdict.kind, reason: verdict.reason, mode, source: verdict.source });
  // The frame after the verdict's frame: the verdict has been painted.
  requestAnimationFrame(() => requestAnimationFrame(() => {
    probe.timings.push({ mode, ms: performance.now() - t0, kind: verdict.kind });
  }));
  clearTimeout(hideTimer);
  hideTimer = setTimeout(hideVerdict, SHOWN_MS[verdict.kind]);
}

export function hideVerdict() {
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
