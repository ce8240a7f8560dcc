"""Parsing what a request carries, strictly: query parameters, ids, bodies, and the headers
that only nginx may set. Everything here either returns a clean value or raises an error
that the problem table answers with a 4xx."""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Iterable
from typing import NamedTuple, TypeVar

import msgspec
from aiohttp import web

from .. import metrics
from ..errors import BadTicketToken, InvalidInput, UnsupportedMediaType
from ..models import IdempotencyKey, Origin, event_of, is_event_id, parse_ticket_id
from ..signing import Claims, TokenRefused, looks_like_token
from .appkeys import ACTOR, SETTINGS

# nginx's $request_id is 32 hex digits; accept any short token of that alphabet.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Visible ASCII, as the IETF draft's sf-string allows; optionally sent quoted.
_IDEMPOTENCY_KEY_RE = re.compile(r"[\x20-\x21\x23-\x7e]{1,255}")
_ASCII_DIGITS_RE = re.compile(r"[0-9]{1,9}")
# A page's `limit`: its default and its bound (the OpenAPI document says the same).
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Deeper JSON than any body of this API needs: such a body is refused as too deep.
MAX_JSON_DEPTH = 8


def reject_unknown_params(request: web.Request, allowed: Iterable[str]) -> None:
    """Unknown parameters, and a parameter given twice, are refused: either is a client
    that means something this API does not do."""
    if not request.query_string:  # the common case, without parsing a query
        return
    query = request.query
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(unknown)}", slug="unknown-parameter")
    repeated = sorted({name for name in query if len(query.getall(name)) > 1})
    if repeated:
        raise InvalidInput(f"query parameter(s) given more than once: {', '.join(repeated)}",
                           slug="repeated-parameter")


def bounded_int(raw: str | None, name: str, default: int, maximum: int) -> int:
    """A positive integer written in ASCII digits, at most `maximum`."""
    if raw is None:
        return default
    if not _ASCII_DIGITS_RE.fullmatch(raw) or not 1 <= int(raw) <= maximum:
        raise InvalidInput(f"{name} must be an integer from 1 to {maximum}, in ASCII digits",
                           slug=f"bad-{name}")
    return int(raw)


def event_id(raw: str) -> str:
    """An event id from a path or query (8 hex digits), or a 400."""
    if not is_event_id(raw):
        raise InvalidInput("the event id is not one (8 hex digits)", slug="malformed-event-id")
    return raw


def ticket_id(request: web.Request, raw: str | None) -> str:
    """A ticket id, given bare or as the signed token of its QR code (verified here, so a
    forged or altered token never reaches the store)."""
    return ticket_claims(request, raw)[0]


def ticket_claims(request: web.Request, raw: str | None) -> tuple[str, Claims | None]:
    """The ticket id, and what its token says when a token was given."""
    if raw is None or raw == "":
        raise InvalidInput("the ticket id is missing: pass ?id=<ticket id>", slug="missing-id")
    if looks_like_token(raw):
        try:
            claims = request.app[SETTINGS].signer.verify(raw)
        except TokenRefused as exc:
            metrics.TOKENS_REFUSED.labels(exc.reason.value).inc()
            raise BadTicketToken(exc.reason) from None
        return claims.ticket_id, claims
    parsed = parse_ticket_id(raw)
    if parsed is None:
        raise InvalidInput("the ticket id is neither a ticket id (a UUID) nor a ticket's token", slug="malformed-id")
    return parsed, None


class Scanned(NamedTuple):
    """What a gate's scan names: our ticket (its id, from the id or a verified token), or a
    code, taken for an imported ticket's."""

    ticket_id: str | None
    code: str | None


def scanned(request: web.Request, raw: str, event: str) -> Scanned:
    """A scan's `ticket` at a list of `event`: a token (verified here), one of the event's
    ticket ids, else a code. A UUID of another event's shape is both: another event's
    ticket, or an imported code that happens to be a UUID (store/checkin.py tells them)."""
    if looks_like_token(raw):
        return Scanned(ticket_id(request, raw), None)
    parsed = parse_ticket_id(raw)
    if parsed is None:
        return Scanned(None, raw)
    return Scanned(parsed, None if event_of(parsed) == event else raw)


def _check_encoding(request: web.Request) -> None:
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType("request bodies are taken as sent, with no Content-Encoding")


def check_depth(raw: bytes) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH, in the terms of the body: brackets inside
    strings are text."""
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise InvalidInput(f"the body nests deeper than {MAX_JSON_DEPTH} levels", slug="malformed-body")
        elif byte in (0x5D, 0x7D):
            depth -= 1


S = TypeVar("S")


async def _read(request: web.Request, max_bytes: int | None) -> bytes:
    """The body, refused with a 413 past `max_bytes` (MAX_BODY_BYTES unless given)."""
    limit = request.app[SETTINGS].max_body_bytes if max_bytes is None else max_bytes
    if (request.content_length or 0) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length or 0)
    raw = await request.read()
    if len(raw) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(raw))
    return raw


async def decode_body(
    request: web.Request, decoder: msgspec.json.Decoder[S], max_bytes: int | None = None
) -> tuple[S, str]:
    """The body decoded and validated (an empty body is {}), and its canonical form, for the
    fingerprint of an Idempotency-Key."""
    _check_encoding(request)
    raw = await _read(request, max_bytes)
    if not raw.strip():
        raw = b"{}"
    try:
        body = decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        # msgspec bounds its own recursion; a body too deep is told so, not by where the
        # parser gave up. A body that decodes is no deeper than its type, so only a failed
        # one is scanned (a Python loop over every byte: 0.84 ms for a batch of 1,000).
        check_depth(raw)
        raise InvalidInput(f"the body is not valid: {exc}", slug="malformed-body") from None
    return body, msgspec.json.encode(body).decode()


class _Empty(msgspec.Struct, forbid_unknown_fields=True):
    """The body of a call that takes none: empty, or {}."""


_EMPTY = msgspec.json.Decoder(_Empty)


async def empty_body(request: web.Request) -> None:
    await decode_body(request, _EMPTY)


def from_proxy(request: web.Request) -> bool:
    """True when nginx forwarded this request: it carries the secret nginx adds. Only then
    are X-Request-Id and X-Real-IP believed; anyone who reaches a replica directly could
    send them."""
    secret = request.app[SETTINGS].proxy_secret
    given = request.headers.get("X-Proxy-Auth")
    return bool(secret) and given is not None and hmac.compare_digest(given.encode(), secret.encode())


def origin(request: web.Request, operation: str = "") -> Origin:
    """Who is asking: the API key's name, nginx's request id (else a fresh one, which a
    retry by the Redis client reuses) and the client address nginx saw (else the peer's);
    with `operation`, what the request asks (as an Idempotency-Key is bound to it), so that
    only the same request gets a write's stored answer."""
    peer = request.remote or ""
    if from_proxy(request):
        given = request.headers.get("X-Request-Id", "")
        if _REQUEST_ID_RE.fullmatch(given):
            client_ip = request.headers.get("X-Real-IP") or peer
            return Origin(actor=request[ACTOR], request_id=given, client_ip=client_ip[:64], forwarded=True,
                          request=operation)
    return Origin(actor=request[ACTOR], request_id=uuid.uuid4().hex, client_ip=peer[:64], forwarded=False,
                  request=operation)


def idempotency_key(request: web.Request, operation: str) -> IdempotencyKey | None:
    """The caller's Idempotency-Key, scoped to the caller and bound to `operation` (what the
    request does, to what, with which body); None when absent."""
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not _IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise InvalidInput("Idempotency-Key must be 1 to 255 visible ASCII characters",
                           slug="bad-idempotency-key")
    return IdempotencyKey(actor=request[ACTOR], key=key, request=operation)
