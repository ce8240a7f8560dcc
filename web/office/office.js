// The box office: sign in with an issuer key, issue one ticket or a batch of an event and
// type, see each with its QR code, print. An admin key also sees every event and list with
// live counts, makes events and lists, and makes, rolls and revokes devices (devices.js).
import { Api, el } from "../shared/api.js";
import { tryKey } from "../shared/signin.js";
import { ticketCard } from "./cards.js";
import { DevicesPanel } from "./devices.js";

const SETTINGS_KEY = "tickets.office";
const SHOWN = 100;
const $ = (id) => document.getElementById(id);
let settings = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "null");
let api = new Api(settings?.key || "");
let events = [];
let countsTimer = null;

async function signIn(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  const { api: candidate, error } = await tryKey(key, "This key may not issue tickets.");
  $("signin-error").textContent = error;
  if (!candidate) return;
  settings = { key };
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
  api = candidate;
  await openDesk();
}

async function openDesk() {
  await loadEvents();
  let admin = false;
  try {
    await api.get("/stats");
    admin = true;
  } catch { /* an issuer key: no admin panel */ }
  // Shown once the key's role is known, so the page never shows a panel it then takes away.
  $("who").textContent = admin ? "Admin" : "Issuer";
  $("admin").hidden = !admin;
  $("signin").hidden = true;
  $("desk").hidden = false;
  $("signout").hidden = false;
  if (admin) {
    await new DevicesPanel(api, () => events).open();
    await refreshCounts();
    clearInterval(countsTimer);
    countsTimer = setInterval(refreshCounts, 5000);
  }
  $("event").focus();
}

async function loadEvents() {
  events = (await api.get("/event?limit=1000")).body;
  const options = () => [el("option", { value: "default", text: "No event (default)" }),
    ...events.map((e) => el("option", { value: e.id, text: `${e.name} (${e.issued} issued)` }))];
  const chosen = $("event").value;
  $("event").replaceChildren(...options());
  if (chosen) $("event").value = chosen;
  else if (events.length) $("event").value = events[events.length - 1].id;
  $("list-event").replaceChildren(...options().slice(1));
}

function eventName(id) {
  const found = events.find((e) => e.id === id);
  return found ? found.name : id;
}

async function issue(event) {
  event.preventDefault();
  const count = Number($("count").value);
  const item = { event: $("event").value };
  for (const field of ["type", "holder", "seat"]) {
    const value = $(field).value.trim();
    if (value) item[field] = value;
  }
  const status = $("issue-status");
  $("issue-button").disabled = true;
  status.textContent = `Issuing ${count}…`;
  try {
    // One key per press: a retry after a lost answer issues nothing twice.
    const idempotencyKey = crypto.randomUUID();
    const tickets = count === 1
      ? [(await api.post("/ticket", item, { idempotencyKey })).body]
      : (await api.post("/ticket/batch", { tickets: Array.from({ length: count }, () => item) },
                        { idempotencyKey, timeoutMs: 30000 })).body.tickets;
    status.textContent = `Issued ${tickets.length} ticket${tickets.length === 1 ? "" : "s"}` +
      (tickets.length > SHOWN ? `; the first ${SHOWN} are shown.` : ".");
    const cards = await Promise.all(tickets.slice(0, SHOWN).map((t) => ticketCard(api, t, eventName(t.event))));
    $("issued").prepend(...cards);
    await loadEvents();
    if (!$("admin").hidden) await refreshCounts();
  } catch (err) {
    status.textContent = `Nothing was issued: ${err.message}`;
  } finally {
    $("issue-button").disabled = false;
  }
}

async function refreshCounts() {
  let stats;
  try {
    stats = (await api.get("/stats")).body;
  } catch {
    return;
  }
  const rows = [];
  for (const e of events) {
    const figures = stats.events[e.id] || { issued: e.issued, lists: {} };
    const lists = Object.entries(figures.lists);
    if (!lists.length) rows.push(el("tr", {}, el("td", { text: e.name }), el("td", { text: "—" }),
      el("td", { text: String(figures.issued) }), el("td"), el("td"), el("td")));
    for (const [, l] of lists) {
      const refused = Object.values(l.refused).reduce((a, b) => a + b, 0);
      rows.push(el("tr", {}, el("td", { text: e.name }), el("td", { text: l.name }),
        el("td", { text: String(figures.issued) }), el("td", { text: String(l.admitted) }),
        el("td", { text: String(l.inside) }), el("td", { text: String(refused) })));
    }
  }
  $("counts").replaceChildren(...rows);
}

async function createEvent(event) {
  event.preventDefault();
  const body = { name: $("event-name").value.trim() };
  if ($("event-capacity").value) body.capacity = Number($("event-capacity").value);
  try {
    const made = (await api.post("/event", body)).body;
    $("admin-status").textContent = `Event ${made.name} created (${made.id}).`;
    $("event-name").value = "";
    await loadEvents();
    $("event").value = made.id;
    await refreshCounts();
  } catch (err) {
    $("admin-status").textContent = `No event was created: ${err.message}`;
  }
}

async function createList(event) {
  event.preventDefault();
  const eventId = $("list-event").value;
  try {
    const made = (await api.post(`/event/${eventId}/list`, { name: $("list-name").value.trim(),
                                                          reentry: $("list-reentry").checked })).body;
    $("admin-status").textContent = `List ${made.name} created (${made.id}).`;
    $("list-name").value = "";
    await refreshCounts();
  } catch (err) {
    $("admin-status").textContent = `No list was created: ${err.message}`;
  }
}

$("signin-form").addEventListener("submit", signIn);
$("issue").addEventListener("submit", issue);
$("new-event").addEventListener("submit", createEvent);
$("new-list").addEventListener("submit", createList);
$("print").addEventListener("click", () => window.print());
$("signout").addEventListener("click", () => {
  localStorage.removeItem(SETTINGS_KEY);
  location.reload();
});

if (settings) openDesk().catch(() => { $("signin").hidden = false; });
else $("signin").hidden = false;
