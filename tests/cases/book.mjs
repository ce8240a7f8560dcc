// The gate's offline twin of the check-in decision (web/gate/book.js) over the shared cases
// (checkin.json), as one device that made every scan itself, offline: run by
// tests/test_checkin_cases.py, which gives on stdin the cases with the tokens and times the
// service used (and the list's book read before the steps: an imported ticket's code is known
// only from it), and compares what this prints with the service's verdicts.
//   node --experimental-default-type=module tests/cases/book.mjs < input.json
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const { Book, message } = await import(pathToFileURL(join(root, "web", "gate", "book.js")).href);
const input = JSON.parse(readFileSync(0, "utf8"));

function memoryStorage() {
  const memory = new Map();
  return { getItem: (k) => memory.get(k) ?? null, setItem: (k, v) => memory.set(k, v) };
}

async function run(c) {
  const book = new Book(c.list.id, memoryStorage());
  book.setKeys(input.jwks);
  book.state.list = c.list;
  book.state.event = c.event;
  book.load(c.book, null);  // the list's book as the service gave it before the steps
  let last = null;
  for (const step of c.steps) {
    if (step === "entry" || step === "exit") {
      const verdict = await book.decide(c.token, step, c.now_s);
      if (verdict.admitted) book.noteOffline({ direction: step, scanned_at: c.now_s }, verdict.ticketId);
      last = step;
    } else if (step === "annul") {
      book.apply({ type: "checkin_annulled", ticket_id: c.ticket_id, list: c.list.id, direction: last });
    } else {
      const type = { revoke: "revoked", invalidate: "invalidated", validate: "validated" }[step];
      if (!type) throw new Error(`no such step: ${step}`);
      book.apply({ type, ticket_id: c.ticket_id });
    }
  }
  const verdict = await book.decide(c.token, c.scan, c.now_s);
  return { name: c.name, reason: verdict.admitted ? null : verdict.reason,
           message: verdict.admitted ? null : message(verdict.reason) };
}

const out = [];
for (const c of input.cases) out.push(await run(c));
process.stdout.write(JSON.stringify(out));
