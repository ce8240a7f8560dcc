// What a gate knows for its offline checks, kept on the device: the list and its event, the
// public keys, the tickets used, inside and revoked, and the imported tickets' codes as
// digests (read from the service's tickets, then kept up from the event's change feed while
// online, and from its own offline admissions), the queue of scans to upload, and the
// conflicts found when they were. One localStorage entry per list.
//
// Must change together: `decide` is the offline twin of decide_entry in
// service/lua/checkin.lua, and MESSAGES the sentences of service/models.py (Refusal);
// tests/cases/checkin.json holds the cases that run against the service and this module alike
// (tests/test_checkin_cases.py); codeDigest is service/models.py's code_digest.
import { TokenError, verifyToken, publicKeysOf, looksLikeToken } from "./token.js";

const MESSAGES = {
  unknown_ticket: "No such ticket.",
  wrong_event: "This ticket is for another event.",
  type_not_allowed: "This ticket's type is not admitted here.",
  too_early: "This ticket is not valid yet.",
  expired: "This ticket is no longer valid.",
  revoked: "This ticket was cancelled or refunded.",
  already_used: "This ticket was already used.",
  already_inside: "This ticket is already inside.",
  not_inside: "This ticket did not enter here.",
  area_full: "This area is full.",
  malformed_token: "This code is not a ticket of this service.",
  unknown_key: "This ticket was signed by a key this service does not know.",
  bad_signature: "This ticket's signature does not match: it was altered or forged.",
  not_signed: "Only a signed ticket code can be checked offline.",
};

export function message(reason) {
  return MESSAGES[reason] || reason;
}

function empty(listId) {
  return { listId, cursor: null, jwks: { keys: [] }, event: null, list: null, listNames: {},
           used: {}, inside: {}, revoked: {}, plainUsed: {}, codes: {}, gone: {}, queue: [], conflicts: [] };
}

// How the service names an imported code in a book and the feed (service/models.py,
// code_digest): SHA-256 of the event id, a newline and the code, its first 32 hex digits.
export async function codeDigest(event, code) {
  const hash = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`${event}\n${code}`));
  return Array.from(new Uint8Array(hash).subarray(0, 16), (b) => b.toString(16).padStart(2, "0")).join("");
}

// An imported ticket's claims, as a signed token would carry them: from a book or a change.
function importedClaims(ticketId, imported) {
  return { ticketId, type: imported.type, validFrom: imported.valid_from, validUntil: imported.valid_until };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class Book {
  constructor(listId, storage = window.localStorage) {
    this.storage = storage;
    this.key = `tickets.gate.book.${listId}`;
    const saved = storage.getItem(this.key);
    this.state = saved ? { ...empty(listId), ...JSON.parse(saved) } : empty(listId);
    this.keys = publicKeysOf(this.state.jwks);
  }

  save() {
    this.storage.setItem(this.key, JSON.stringify(this.state));
  }

  setKeys(jwks) {
    this.state.jwks = jwks;
    this.keys = publicKeysOf(jwks);
  }

  // One entry of the event's change feed (service/models.py, Change.to_json).
  apply(change) {
    const s = this.state, id = change.ticket_id;
    const here = change.list === s.listId;
    switch (change.type) {
      case "checkin":
        if (!here) break;
        if (change.direction === "entry") {
          if (!s.used[id]) s.used[id] = { at: change.scanned_at ?? change.timestamp, list: change.list };
          s.inside[id] = 1;
        } else {
          delete s.inside[id];
        }
        break;
      case "checkin_annulled":
        // An annulled exit puts the holder back inside and leaves the ticket used; an annulled
        // entry (at a single-entry list always the first) undoes both.
        if (!here) break;
        if (change.direction === "exit") {
          s.inside[id] = 1;
        } else {
          delete s.used[id];
          delete s.inside[id];
        }
        break;
      case "created":
        if (change.imported) s.codes[change.imported.code_digest] = importedClaims(id, change.imported);
        break;
      case "removed":  // an imported ticket withdrawn with its source: its code is no ticket now
        s.gone[id] = 1;
        break;
      case "revoked":
        s.revoked[id] = 1;
        break;
      case "invalidated":
        s.plainUsed[id] = 1;
        break;
      case "validated":
        delete s.plainUsed[id];
        break;
      default:
        break;
    }
  }

  // The book read from the service's tickets (GET .../book): what it says replaces what this
  // device had, but for its own offline admissions not yet uploaded; the change feed takes
  // over from `changesAfter`.
  load(tickets, changesAfter) {
    const s = this.state;
    s.used = {}; s.inside = {}; s.revoked = {}; s.plainUsed = {}; s.codes = {}; s.gone = {};
    for (const t of tickets) {
      if (t.imported) s.codes[t.imported.code_digest] = importedClaims(t.id, t.imported);
      if (t.status === "revoked") s.revoked[t.id] = 1;
      if (t.plain_used) s.plainUsed[t.id] = 1;
      if (t.used_at !== null) s.used[t.id] = { at: t.used_at, list: s.listId };
      if (t.inside) s.inside[t.id] = 1;
    }
    for (const scan of s.queue) this.noteOffline(scan, scan.ticketId);
    s.cursor = changesAfter;
  }

  // The offline verdict for a scanned code, as the service would decide it with what this
  // device knows: {admitted, reason, usedAt, usedList, ticketId}.
  async decide(code, direction, nowS) {
    let claims;
    if (looksLikeToken(code)) {
      try {
        claims = await verifyToken(code, this.keys);
      } catch (err) {
        if (err instanceof TokenError) return { admitted: false, reason: err.reason };
        throw err;
      }
    } else {
      claims = await this.imported(code);
      // A bare id of ours says nothing offline (only its signed token does); any other code
      // not in the book is no ticket of this event, as far as this device knows.
      if (!claims) return { admitted: false, reason: UUID.test(code) ? "not_signed" : "unknown_ticket" };
    }
    const s = this.state, id = claims.ticketId;
    const refuse = (reason, extra = {}) => ({ admitted: false, reason, ticketId: id, claims, ...extra });
    if (!s.list || claims.event !== s.list.event) return refuse("wrong_event");
    // A holder may always leave, revoked or not: as checkin.lua decides it.
    if (direction === "exit") {
      return s.inside[id] ? { admitted: true, reason: null, ticketId: id, claims } : refuse("not_inside");
    }
    if (s.revoked[id]) return refuse("revoked");
    if (s.list.types && !s.list.types.includes(claims.type)) return refuse("type_not_allowed");
    const from = claims.validFrom ?? (s.event && s.event.starts_at);
    const until = claims.validUntil ?? (s.event && s.event.ends_at);
    if (from && nowS < from) return refuse("too_early");
    if (until && nowS > until) return refuse("expired");
    if (s.list.reentry) {
      if (s.inside[id]) return refuse("already_inside");
    } else if (s.used[id]) {
      return refuse("already_used", { usedAt: s.used[id].at, usedList: s.used[id].list, here: s.used[id].here });
    } else if (s.plainUsed[id]) {
      return refuse("already_used");
    }
    return { admitted: true, reason: null, ticketId: id, claims };
  }

  // An imported code's claims, from its digest in the book; null for a code the book lacks.
  async imported(code) {
    const s = this.state;
    if (!s.list) return null;
    const found = s.codes[await codeDigest(s.list.event, code)];
    return found && !s.gone[found.ticketId] ? { ...found, event: s.list.event } : null;
  }

  // An answer of the service to this device: known at once, before the feed brings it.
  noteOnline(answer, scan) {
    const id = answer.ticket && answer.ticket.id;
    if (!id || !answer.admitted) return;
    this.apply({ type: "checkin", ticket_id: id, list: answer.list, direction: answer.direction,
                 scanned_at: scan.scanned_at, timestamp: scan.scanned_at });
  }

  // An admission this device made offline: known at once for its next scans, and queued.
  admitOffline(scan, ticketId) {
    this.noteOffline(scan, ticketId);
    this.state.queue.push({ ...scan, ticketId });
    this.save();
  }

  noteOffline(scan, ticketId) {
    const s = this.state;
    if (scan.direction === "entry") {
      if (!s.used[ticketId]) s.used[ticketId] = { at: scan.scanned_at, list: s.listId, here: true };
      s.inside[ticketId] = 1;
    } else {
      delete s.inside[ticketId];
    }
  }
}

// Forget every list's book on this device: a gate signed out leaves nothing for the next key.
export function forgetBooks(storage = window.localStorage) {
  for (const key of Object.keys(storage)) {
    if (key.startsWith("tickets.gate.book.")) storage.removeItem(key);
  }
}
