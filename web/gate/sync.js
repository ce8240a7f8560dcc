// Keeping a gate's book up while online: the keys, the event and its lists, the book read from
// the service's tickets, then the event's change feed, and the queue of scans admitted offline
// uploaded (the conflicts an upload finds are listed for the steward).
import { Problem, Unreachable, nextLink, formatTime, el } from "../shared/api.js";
import { message } from "./book.js";
import { isRevoked } from "./device.js";

const FEED_PAGES_PER_SYNC = 50;
const UPLOAD_TIMEOUT_MS = 5000;
const CONFLICTS_KEPT = 100;

const $ = (id) => document.getElementById(id);

export function bodyOf(scan) {
  return { ticket: scan.ticket, list: scan.list, direction: scan.direction, scanned_at: scan.scanned_at };
}

export class Sync {
  // view: setOnline(bool), renderCounters(), renderWhere(), revoked(); local: the counts of scans since
  // the list's counters were last read; probe: what the browser tests count.
  constructor({ api, book, event, list, view, local, probe }) {
    Object.assign(this, { api, book, event, list, view, local, probe });
    this.running = false;
  }

  listName(id) {
    return this.book.state.listNames[id] || id || "";
  }

  async run() {
    if (this.running) return;
    this.running = true;
    const { api, book } = this;
    try {
      const [keys, event, lists] = await Promise.all([
        api.get("/keys"), api.get(`/event/${this.event}`), api.get(`/event/${this.event}/list`)]);
      book.setKeys(keys.body);
      book.state.event = event.body;
      for (const l of lists.body) book.state.listNames[l.id] = l.name;
      book.state.list = lists.body.find((l) => l.id === this.list) || book.state.list;
      await this.pullChanges();
      book.save();
      if (await this.uploadQueue()) await this.readList();
      this.resetLocal();
      this.view.setOnline(true);
      this.probe.synced += 1;
      this.view.renderWhere();
    } catch (err) {
      if (err instanceof Unreachable) this.view.setOnline(false);
      else if (isRevoked(err)) this.view.revoked();
      else console.warn("sync", err);
    } finally {
      this.running = false;
      this.view.renderCounters();
    }
  }

  // The list's own counters, after an online scan.
  async refreshCounters() {
    try {
      await this.readList();
      this.resetLocal();
      this.view.renderCounters();
    } catch { /* the next sync will */ }
  }

  async readList() {
    this.book.state.list = (await this.api.get(`/event/${this.event}/list/${this.list}`)).body;
  }

  resetLocal() {
    this.local.admitted = 0;
    this.local.refused = 0;
  }

  // The book from the service's tickets: on the first sync, and whenever the change feed was
  // trimmed past this device's cursor (the feed alone would miss what was trimmed away).
  async readBook() {
    const tickets = [];
    let cursor = null, changesAfter = null;
    do {
      const q = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
      const r = await this.api.get(`/event/${this.event}/list/${this.list}/book?limit=1000${q}`);
      changesAfter = changesAfter ?? r.body.changes_after;
      tickets.push(...r.body.tickets);
      cursor = r.body.next;
    } while (cursor);
    this.book.load(tickets, changesAfter);
    this.probe.bookReads = (this.probe.bookReads || 0) + 1;
  }

  async pullChanges() {
    const book = this.book;
    if (!book.state.cursor) await this.readBook();
    for (let page = 0; page < FEED_PAGES_PER_SYNC; page++) {
      const after = `&after=${encodeURIComponent(book.state.cursor)}`;
      let r;
      try {
        r = await this.api.get(`/changes?event=${this.event}&limit=1000${after}`);
      } catch (err) {
        if (err instanceof Problem && err.status === 410) {  // trimmed past the cursor: read the book again
          await this.readBook();
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
  async uploadQueue() {
    const book = this.book;
    let uploaded = 0;
    while (book.state.queue.length) {
      const scan = book.state.queue[0];
      let answer = null, refusedDetail = "";
      try {
        answer = (await this.api.post("/checkin", { ...bodyOf(scan), offline: true },
                                      { idempotencyKey: `${scan.id}:upload`, timeoutMs: UPLOAD_TIMEOUT_MS })).body;
      } catch (err) {
        if (!(err instanceof Problem) || isRevoked(err)) throw err;  // kept: nothing can go up now
        refusedDetail = err.message;
      }
      book.state.queue.shift();
      if (answer && answer.conflict) {
        const first = answer.used_at ? `first used at ${formatTime(answer.used_at)}`
          + (answer.used_list ? ` at ${this.listName(answer.used_list)}` : "") : "";
        this.recordConflict(scan, message(answer.reason), first);
      } else if (!answer) {
        this.recordConflict(scan, "the upload was refused", refusedDetail);
      }
      book.save();
      uploaded += 1;
    }
    return uploaded;
  }

  recordConflict(scan, what, detail) {
    const state = this.book.state;
    state.conflicts.unshift({ ticket: scan.ticketId || scan.ticket.slice(0, 40), scanned_at: scan.scanned_at,
                              what, detail });
    state.conflicts = state.conflicts.slice(0, CONFLICTS_KEPT);
    this.renderConflicts();
    $("announce").textContent = `Conflict: a ticket admitted offline at ${formatTime(scan.scanned_at)}: ${what}`;
  }

  renderConflicts() {
    const items = this.book.state.conflicts.map((c) => el("li", { class: "conflict" },
      el("strong", { text: "Conflict" }), " ",
      el("span", { text: `admitted offline here at ${formatTime(c.scanned_at)}. ${c.what}${c.detail ? ` (${c.detail})` : ""}` }),
      " ", el("span", { class: "ticket", text: c.ticket.slice(0, 13) })));
    $("conflicts").replaceChildren(...items);
    $("conflicts-section").hidden = items.length === 0;
  }
}
