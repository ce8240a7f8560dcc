// A ticket's token, read and verified in the browser with no network: the layout that
// service/signing.py writes (see its docstring). Ed25519 by the vendored noble-ed25519.
import { verifyAsync } from "../vendor/noble-ed25519/index.js";

export const TOKEN_PREFIX = "TK";
const DOMAIN = new TextEncoder().encode("tickets-token-v1\0");
const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const VERSION = 1;
const HAS_FROM = 1, HAS_UNTIL = 2, HAS_TYPE = 4;
const SIG_BYTES = 64;
const TIME_BYTES = 5;
const MIN_BYTES = 1 + 2 + 16 + SIG_BYTES;

// The refusal codes are the service's own (service/models.py, Refusal).
export class TokenError extends Error {
  constructor(reason) {
    super(reason);
    this.reason = reason;
  }
}

export function looksLikeToken(text) {
  return text.startsWith(TOKEN_PREFIX);
}

function base32(text) {
  const out = [];
  let bits = 0, value = 0;
  for (const ch of text) {
    const digit = ALPHABET.indexOf(ch);
    if (digit < 0) throw new TokenError("malformed_token");
    value = (value << 5) | digit;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >> bits) & 0xff);
    }
  }
  // One token, one spelling: the spare bits of the last character are zero.
  if (bits >= 5 || (value & ((1 << bits) - 1)) !== 0) throw new TokenError("malformed_token");
  return new Uint8Array(out);
}

function uuidOf(bytes) {
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function eventOf(ticketId) {
  return ticketId[14] === "8" ? ticketId.slice(0, 8) : "default";
}

// The fields of a token, unverified: what the signature covers, and the signature.
export function parseToken(text) {
  if (!looksLikeToken(text)) throw new TokenError("malformed_token");
  const raw = base32(text.slice(TOKEN_PREFIX.length));
  if (raw.length < MIN_BYTES || raw[0] >> 4 !== VERSION || (raw[0] & 0x08)) throw new TokenError("malformed_token");
  const body = raw.subarray(0, raw.length - SIG_BYTES);
  const flags = body[0] & 0x0f;
  const kid = Array.from(body.subarray(1, 3), (b) => b.toString(16).padStart(2, "0")).join("");
  const ticketId = uuidOf(body.subarray(3, 19));
  let at = 19, validFrom = null, validUntil = null, type = null;
  // Big-endian whole seconds in 5 bytes.
  const seconds = () => {
    if (at + TIME_BYTES > body.length) throw new RangeError("time");
    let value = 0;
    for (let i = 0; i < TIME_BYTES; i++) value = value * 256 + body[at + i];
    at += TIME_BYTES;
    return value;
  };
  try {
    if (flags & HAS_FROM) validFrom = seconds();
    if (flags & HAS_UNTIL) validUntil = seconds();
    if (flags & HAS_TYPE) {
      const size = body[at];
      if (size === undefined || at + 1 + size > body.length) throw new RangeError("type");
      type = new TextDecoder("ascii").decode(body.subarray(at + 1, at + 1 + size));
      at += 1 + size;
    }
  } catch {
    throw new TokenError("malformed_token");
  }
  if (at !== body.length) throw new TokenError("malformed_token");
  return { kid, ticketId, event: eventOf(ticketId), type, validFrom, validUntil, body,
           signature: raw.subarray(raw.length - SIG_BYTES) };
}

export function publicKeysOf(jwks) {
  const keys = new Map();
  for (const k of jwks.keys || []) {
    if (k.kty !== "OKP" || k.crv !== "Ed25519") continue;
    const b64 = k.x.replace(/-/g, "+").replace(/_/g, "/");
    keys.set(k.kid, Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0)));
  }
  return keys;
}

// The verified claims, or a TokenError with the service's refusal code.
export async function verifyToken(text, keys) {
  const claims = parseToken(text);
  const key = keys.get(claims.kid);
  if (!key) throw new TokenError("unknown_key");
  const message = new Uint8Array(DOMAIN.length + claims.body.length);
  message.set(DOMAIN);
  message.set(claims.body, DOMAIN.length);
  let good = false;
  try {
    good = await verifyAsync(claims.signature, message, key, { zip215: false });
  } catch {
    good = false;
  }
  if (!good) throw new TokenError("bad_signature");
  return claims;
}
