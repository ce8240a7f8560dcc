"""The OpenAPI 3.1 document served at /openapi.json. Tests check every route against it."""

from __future__ import annotations

import copy
import re
from typing import Any

import msgspec

from .. import SERVICE_NAME, __version__
from ..models import ChangeType, Refusal, TicketState
from ..signing import MAX_TOKEN_CHARS, TOKEN_PREFIX
from .bodies import AnnulBody, CheckinBody, EventBody, ListBody, RevokeBody, TicketBody
from .inputs import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

JSON = "application/json"
PROBLEM = "application/problem+json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _problem(description: str, schema: str = "Problem") -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": _ref(schema)}}}


def _ok(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


_UNAVAILABLE = {
    "description": "Redis did not answer (store-unavailable), or replicas did not confirm an applied write "
                   "in time (store-not-replicated); retry a write with the same X-Request-Id or Idempotency-Key "
                   "to get its stored answer",
    "headers": {"Retry-After": {"schema": {"type": "string"}}},
    "content": {PROBLEM: {"schema": _ref("Problem")}},
}
_EVENT_PATH = {"name": "event", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^[0-9a-f]{8}$"}}
_LIMIT = {"name": "limit", "in": "query", "required": False,
          "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE}}
_CURSOR = {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
           "description": "Opaque; copy it from the Link rel=next header."}
_OUT_OF_MEMORY = _problem("Redis is out of memory (maxmemory): nothing was written")
_ID_SCHEMA = {
    "type": "string",
    "pattern": ("^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                f"|{TOKEN_PREFIX}[A-Z2-7]+)$"),
    "maxLength": MAX_TOKEN_CHARS,
    "description": "A ticket id (a UUID), or the signed token its QR code carries (`TK...`, verified).",
}
_ID_QUERY = {
    "name": "id", "in": "query", "required": True,
    "schema": _ID_SCHEMA, "description": "Ticket id (a UUID), or its signed token.",
}
_ID_PATH = {"name": "id", "in": "path", "required": True, "schema": _ID_SCHEMA}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ !#-~]+$"},
    "description": (
        "Makes a retry safe: the key is scoped to the caller and bound to the request that first "
        "used it (operation, ticket, body); its first answer (status and body) is kept for 24 h "
        "and returned again with `Idempotent-Replayed: true`. The same key on any different "
        "request (another ticket, operation or body) is a 422."
    ),
}
_AUTH_ERRORS = {
    "401": {
        "description": "Missing or unknown API key",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    },
    "403": {"description": "The key's role does not allow this",
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}},
}
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}]
_REPLAYED = {
    "Idempotent-Replayed": {
        "description": "Present when this is the stored first answer to a replayed request",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def _transition(verb: str, params: list[dict[str, Any]], already: str) -> dict[str, Any]:
    roles = "scanner, admin" if verb == "invalidate" else "admin"
    return {
        "summary": f"{verb.capitalize()} a ticket (roles: {roles})",
        "description": (
            f"Atomic compare-and-set inside Redis. Of many concurrent {verb} calls on one "
            "ticket exactly one gets 200. A replay of the same request (same X-Request-Id, as "
            "nginx sends when it retries on another replica) gets the first answer back."
        ),
        "parameters": [*params, _IDEMPOTENCY_KEY],
        "security": _SECURED,
        "responses": {
            "200": _ok("The ticket after the change", _ref("Ticket"), _REPLAYED),
            "400": _problem("Missing or malformed id, or an unknown query parameter"),
            **_AUTH_ERRORS,
            "404": _problem("No such ticket"),
            "409": _problem(f"The ticket is already {already}; `ticket` holds it", "Conflict"),
            "422": _problem("The Idempotency-Key was used for a different request"),
            "503": _UNAVAILABLE,
        },
    }


def _query_transition(verb: str, already: str) -> dict[str, Any]:
    op = _transition(verb, [_ID_QUERY], already)
    op["description"] += " The seed's `curl -X UPDATE` form is served too (via nginx as PATCH)."
    return {"post": op, "patch": op, "x-additional-methods": ["UPDATE"]}


def _paths() -> dict[str, Any]:
    return {
        "/": {"get": {"summary": "Heartbeat", "responses": {"200": _ok("Service name and version", _ref("Index"))}}},
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _ok("The process runs", _ref("Status"))}}},
        "/readyz": {"get": {"summary": "Readiness: a write would succeed now", "responses": {
            "200": _ok("A probe was written on every Redis master, confirmed by its replicas where they must "
                       "confirm", _ref("Status")), "503": _UNAVAILABLE}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {
            "200": _ok("OpenAPI 3.1 document", {"type": "object"})}}},
        "/ticket": {
            "post": {
                "summary": "Create a ticket (roles: issuer, admin)",
                "description": (
                    "With no body (or {}), exactly the seed's call: a ticket of the default event. "
                    "With `event`, a ticket of that event, while its capacity lasts (409 sold-out after)."
                ),
                "parameters": [_IDEMPOTENCY_KEY],
                "security": _SECURED,
                "requestBody": {"required": False, "content": {JSON: {"schema": _ref("TicketBody")}}},
                "responses": {
                    "201": _ok("The new ticket", _ref("Ticket"), {
                        "Location": {"schema": {"type": "string"}}, **_REPLAYED}),
                    "400": _problem("Malformed body or unknown query parameter"),
                    **_AUTH_ERRORS,
                    "404": _problem("No such event"),
                    "409": _problem("The event is sold out: its capacity is issued"),
                    "413": _problem("Body too large"),
                    "422": _problem("The Idempotency-Key was used for a different request"),
                    "503": _UNAVAILABLE,
                },
            },
            "get": {
                "summary": (
                    "One ticket with ?id=, as a one-element list (roles: issuer, scanner, "
                    "admin), or a page of all tickets (role: admin)"
                ),
                "security": _SECURED,
                "parameters": [
                    {"name": "id", "in": "query", "required": False, "schema": _ID_SCHEMA},
                    _LIMIT, _CURSOR,
                ],
                "responses": {
                    "200": _ok("Tickets", {"type": "array", "items": _ref("Ticket")}, {
                        "Link": {"description": "rel=next while more remain", "schema": {"type": "string"}}}),
                    "400": _problem("Malformed id, limit or cursor"),
                    **_AUTH_ERRORS,
                    "404": _problem("No ticket with that id"),
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/ticket/{id}": {"get": {
            "summary": "One ticket (roles: issuer, scanner, admin)",
            "parameters": [_ID_PATH],
            "security": _SECURED,
            "responses": {
                "200": _ok("The ticket", _ref("Ticket")),
                "400": _problem("Malformed id"),
                **_AUTH_ERRORS,
                "404": _problem("No such ticket"),
                "503": _UNAVAILABLE,
            },
        }},
        "/ticket/invalidate": _query_transition("invalidate", "invalid"),
        "/ticket/validate": _query_transition("validate", "valid"),
        "/ticket/{id}/history": {"get": {
            "summary": "The ticket's events, oldest first (roles: scanner, admin)",
            "description": (
                "As recorded by the tickets processor from the event stream: refused attempts "
                "(a second scan) included. It trails the ticket's state by the processor's lag."
            ),
            "parameters": [_ID_PATH],
            "security": _SECURED,
            "responses": {
                "200": _ok("Events", {"type": "array", "items": _ref("Change")}),
                "400": _problem("Malformed id"),
                **_AUTH_ERRORS,
                "404": _problem("No such ticket"),
                "503": _UNAVAILABLE,
            },
        }},
        "/stats": {"get": {
            "summary": "Exact ticket totals and the processor's counts (role: admin)",
            "security": _SECURED,
            "responses": {"200": _ok("Totals", _ref("Stats")), **_AUTH_ERRORS, "503": _UNAVAILABLE},
        }},
        "/changes": {"get": {
            "summary": "The change feed: every event in order, paged (role: admin; with event=, that event's)",
            "description": (
                "Start without `after`; follow `Link: rel=next`, which is always sent, to poll "
                "for more. No event is skipped or repeated. 410 when the streams were trimmed "
                "past the cursor (EVENTS_MAXLEN)."
            ),
            "security": _SECURED,
            "parameters": [
                {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
                _LIMIT,
                {"name": "event", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": "^[0-9a-f]{8}$"},
                 "description": "One event's changes only (its tickets, scans at its lists); then roles "
                                "issuer, scanner (bound to it, if bound) and admin may read it. A page may "
                                "hold fewer than `limit` while more follow."},
            ],
            "responses": {
                "200": _ok("Events", {"type": "array", "items": _ref("Change")}, {
                    "Link": {"schema": {"type": "string"}}}),
                "400": _problem("Malformed cursor or limit"),
                **_AUTH_ERRORS,
                "410": _problem("The streams were trimmed past this cursor"),
                "503": _UNAVAILABLE,
            },
        }},
        "/metrics": {"get": {
            "summary": "Prometheus metrics of this replica (not served through nginx)",
            "responses": {
                "200": {"description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}}},
                "404": _problem("Asked through nginx's public port, which does not serve it"),
            },
        }},
        "/ticket/batch": {"post": {
            "summary": "Issue up to 1,000 tickets of one event, all or nothing (roles: issuer, admin)",
            "description": (
                "A bad item issues nothing: the 400 problem names every bad item in `errors` (index, detail). "
                "All items are of one event; its capacity must hold all of them (409 sold-out otherwise)."
            ),
            "parameters": [_IDEMPOTENCY_KEY],
            "security": _SECURED,
            "requestBody": {"required": True, "content": {JSON: {"schema": {
                "type": "object", "required": ["tickets"], "additionalProperties": False,
                "properties": {"tickets": {"type": "array", "minItems": 1, "maxItems": 1000,
                                           "items": _ref("TicketBody")}}}}}},
            "responses": {
                "201": _ok("The tickets, in the order asked", {
                    "type": "object", "required": ["tickets"],
                    "properties": {"tickets": {"type": "array", "items": _ref("Ticket")}}}, _REPLAYED),
                "400": _problem("A bad item (all are named) or a batch of several events"),
                **_AUTH_ERRORS,
                "404": _problem("No such event"),
                "409": _problem("The event's capacity cannot hold the batch"),
                "422": _problem("The Idempotency-Key was used for a different request"),
                "503": _UNAVAILABLE,
            },
        }},
        "/ticket/{id}/revoke": {"post": {
            "summary": "Revoke a ticket: refunded or cancelled, refused for ever (roles: issuer, admin)",
            "parameters": [_ID_PATH, _IDEMPOTENCY_KEY],
            "security": _SECURED,
            "requestBody": {"required": False, "content": {JSON: {"schema": _ref("RevokeBody")}}},
            "responses": {
                "200": _ok("The ticket, now revoked", _ref("Ticket"), _REPLAYED),
                "400": _problem("Malformed id or body"),
                **_AUTH_ERRORS,
                "404": _problem("No such ticket"),
                "409": _problem("The ticket is already revoked; `ticket` holds it", "Conflict"),
                "422": _problem("The Idempotency-Key was used for a different request"),
                "503": _UNAVAILABLE,
            },
        }},
        "/event": {
            "post": {
                "summary": "Create an event (role: admin)",
                "security": _SECURED,
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("EventBody")}}},
                "responses": {
                    "201": _ok("The new event", _ref("Event"), {"Location": {"schema": {"type": "string"}}}),
                    "400": _problem("Malformed body"),
                    **_AUTH_ERRORS,
                    "503": _UNAVAILABLE,
                },
            },
            "get": {
                "summary": "A page of events (roles: issuer, scanner, admin)",
                "security": _SECURED,
                "parameters": [
                    _LIMIT, _CURSOR,
                ],
                "responses": {
                    "200": _ok("Events", {"type": "array", "items": _ref("Event")}, {
                        "Link": {"description": "rel=next while more remain", "schema": {"type": "string"}}}),
                    "400": _problem("Malformed limit or cursor"),
                    **_AUTH_ERRORS,
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/event/{event}": {"get": {
            "summary": "One event, with the tickets it has issued (roles: issuer, scanner, admin)",
            "parameters": [_EVENT_PATH],
            "security": _SECURED,
            "responses": {
                "200": _ok("The event", _ref("Event")),
                "400": _problem("Malformed event id"),
                **_AUTH_ERRORS,
                "404": _problem("No such event"),
                "503": _UNAVAILABLE,
            },
        }},
        "/keys": {"get": {
            "summary": "The public keys that verify ticket tokens, as a JWK Set (no auth)",
            "description": "Ed25519 (RFC 8037). A gate caches them to check tokens offline; `signing` marks the "
                           "key that signs new tokens. Rotation adds a key; removal retires one.",
            "responses": {"200": {"description": "JWK Set", "content": {JSON: {
                "schema": _ref("KeySet")}}}},
        }},
        "/ticket/{id}/token": {"get": {
            "summary": "The ticket's signed token, what its QR code carries (roles: issuer, admin)",
            "parameters": [_ID_PATH],
            "security": _SECURED,
            "responses": {
                "200": _ok("The token and the size of its QR code", _ref("TicketToken")),
                "400": _problem("Malformed id, or a token that does not verify"),
                **_AUTH_ERRORS,
                "404": _problem("No such ticket"),
                "409": _problem("The ticket is revoked: it gets no token"),
                "501": _problem("No signing key is configured"),
                "503": _UNAVAILABLE,
            },
        }},
        **{f"/ticket/{{id}}/qr.{kind}": {"get": {
            "summary": f"The ticket's QR code as {kind.upper()} (roles: issuer, admin)",
            "parameters": [_ID_PATH],
            "security": _SECURED,
            "responses": {
                "200": {"description": "The QR code of the ticket's token",
                        "content": {media: {"schema": {"type": "string", "format": "binary"}}}},
                "400": _problem("Malformed id, or a token that does not verify"),
                **_AUTH_ERRORS,
                "404": _problem("No such ticket"),
                "409": _problem("The ticket is revoked: it gets no token"),
                "501": _problem("No signing key is configured"),
                "503": _UNAVAILABLE,
            },
        }} for kind, media in (("svg", "image/svg+xml"), ("png", "image/png"))},
        "/event/{event}/list": {"get": {
            "summary": "Every check-in list of the event, with live counters (roles: issuer, scanner, admin)",
            "parameters": [_EVENT_PATH],
            "security": _SECURED,
            "responses": {
                "200": _ok("The lists", {"type": "array", "items": _ref("CheckinList")}),
                "400": _problem("Malformed event id"),
                **_AUTH_ERRORS,
                "503": _UNAVAILABLE,
            },
        }, "post": {
            "summary": "Create a check-in list of the event: a gate or an area (role: admin)",
            "parameters": [_EVENT_PATH],
            "security": _SECURED,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ListBody")}}},
            "responses": {
                "201": _ok("The new list", _ref("CheckinList"), {"Location": {"schema": {"type": "string"}}}),
                "400": _problem("Malformed body, or a list it leaves that is not the event's"),
                **_AUTH_ERRORS,
                "404": _problem("No such event"),
                "503": _UNAVAILABLE,
            },
        }},
        "/event/{event}/list/{list}": {"get": {
            "summary": "A check-in list with its live occupancy and totals (roles: issuer, scanner, admin)",
            "parameters": [_EVENT_PATH, {"name": "list", "in": "path", "required": True,
                                         "schema": {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}$"}}],
            "security": _SECURED,
            "responses": {
                "200": _ok("The list", _ref("CheckinList")),
                "400": _problem("Malformed event or list id"),
                **_AUTH_ERRORS,
                "404": _problem("No such list in this event"),
                "503": _UNAVAILABLE,
            },
        }},
        "/event/{event}/list/{list}/book": {"get": {
            "summary": "An offline gate's book of the event, for its list (roles: scanner, admin)",
            "description": (
                "Read from the tickets themselves, not the change feed (whose oldest entries a busy shard "
                "trims): every ticket of the event that is revoked, used, or admitted at or inside the list. "
                "Then read `/changes?event=` from `changes_after`, a position taken before the first page."),
            "parameters": [_EVENT_PATH, {"name": "list", "in": "path", "required": True,
                                         "schema": {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}$"}},
                           _LIMIT, _CURSOR],
            "security": _SECURED,
            "responses": {
                "200": _ok("A page of the book", {
                    "type": "object", "required": ["tickets", "changes_after", "next"],
                    "properties": {
                        "changes_after": {"type": "string", "description": "The feed cursor to read on from"},
                        "next": {"type": ["string", "null"], "description": "The cursor of the next page"},
                        "tickets": {"type": "array", "items": {
                            "type": "object", "required": ["id", "status", "plain_used", "used_at", "inside"],
                            "properties": {
                                "id": {"type": "string"}, "status": {"enum": ["valid", "used", "revoked"]},
                                "plain_used": {"type": "boolean"},
                                "used_at": {"type": ["number", "null"],
                                            "description": "Its first admission at the list (seconds)"},
                                "inside": {"type": "boolean"}}}}}}, {
                    "Link": {"description": "rel=next while more remain", "schema": {"type": "string"}}}),
                "400": _problem("Malformed event or list id, limit or cursor"),
                **_AUTH_ERRORS,
                "404": _problem("No such list in this event"),
                "503": _UNAVAILABLE,
            },
        }},
        "/checkin": {"post": {
            "summary": "One scan at a gate (roles: scanner, admin)",
            "description": (
                "Decided and recorded atomically. 200 whether or not the holder is admitted: `reason` is "
                "null when admitted, else one of " + ", ".join(f"`{r.value}`" for r in Refusal) + "."
            ),
            "security": _SECURED,
            "parameters": [_IDEMPOTENCY_KEY],
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("CheckinBody")}}},
            "responses": {
                "200": _ok("The gate's answer", _ref("CheckinResult"), _REPLAYED),
                "400": _problem("Malformed body"),
                **_AUTH_ERRORS,
                "404": _problem("No such list"),
                "422": _problem("The Idempotency-Key was used for a different request"),
                "503": _UNAVAILABLE,
            },
        }},
        "/checkin/annul": {"post": {
            "summary": "Undo this key's own last scan of a ticket on a list, within ANNUL_WINDOW_S "
                       "(roles: scanner, admin)",
            "security": _SECURED,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("AnnulBody")}}},
            "responses": {
                "200": _ok("Annulled", {"type": "object", "required": ["annulled", "ticket", "list", "inside"],
                                        "properties": {"annulled": {"type": "boolean"}, "ticket": {"type": "string"},
                                                       "list": {"type": "string"}, "inside": {"type": "integer"}}}),
                "400": _problem("Malformed body"),
                **_AUTH_ERRORS,
                "409": _problem("Nothing of this key's to annul there, too late, superseded by a later scan of "
                                "the ticket, or the area it would put the holder back into is full"),
                "503": _UNAVAILABLE,
            },
        }},
        "/ticket/{id}/invalidate": {"post": _transition("invalidate", [_ID_PATH], "invalid")},
        "/ticket/{id}/validate": {"post": _transition("validate", [_ID_PATH], "valid")},
    }


def _schemas() -> dict[str, Any]:
    nullable_number = {"type": ["number", "null"]}
    nullable_string = {"type": ["string", "null"]}
    ticket = {
        "type": "object",
        "required": ["id", "timestamp", "valid", "event", "type", "holder", "seat", "valid_from", "valid_until",
                     "status"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "timestamp": {"type": "number", "description": "Creation time, seconds since the epoch"},
            "valid": {"type": "boolean", "description": "The seed's: true when a plain invalidate would succeed now"},
            "event": {"type": "string", "description": "An event id, or `default`"},
            "type": nullable_string, "holder": nullable_string, "seat": nullable_string,
            "valid_from": nullable_number, "valid_until": nullable_number,
            "status": {"type": "string", "enum": [s.value for s in TicketState]},
        },
    }
    event = {
        "type": "object",
        "required": ["id", "name", "starts_at", "ends_at", "capacity", "issued"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9a-f]{8}$"}, "name": {"type": "string"},
            "starts_at": nullable_number, "ends_at": nullable_number,
            "capacity": {"type": ["integer", "null"]},
            "issued": {"type": "integer", "description": "Tickets issued, exactly"},
        },
    }
    problem = {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
        },
    }
    conflict = {"allOf": [_ref("Problem"), {"type": "object", "required": ["ticket"],
                                            "properties": {"ticket": _ref("Ticket")}}]}
    _, bodies = msgspec.json.schema_components(
        [TicketBody, EventBody, RevokeBody, ListBody, CheckinBody, AnnulBody],
        ref_template="#/components/schemas/{name}")
    checkin_list = {
        "type": "object",
        "required": ["id", "event", "name", "types", "reentry", "capacity", "leaves", "inside", "admitted", "exits",
                     "refused"],
        "properties": {
            "id": {"type": "string"}, "event": {"type": "string"}, "name": {"type": "string"},
            "types": {"type": ["array", "null"], "items": {"type": "string"}}, "reentry": {"type": "boolean"},
            "capacity": {"type": ["integer", "null"]}, "leaves": {"type": "array", "items": {"type": "string"}},
            "inside": {"type": "integer"}, "admitted": {"type": "integer"}, "exits": {"type": "integer"},
            "refused": {"type": "object", "additionalProperties": {"type": "integer"}},
            "conflicts": {"type": "integer", "description": "Offline admissions refused when uploaded"},
        },
    }
    checkin_result = {
        "type": "object",
        "required": ["admitted", "reason", "message", "ticket", "list", "direction", "inside", "used_at",
                     "used_list"],
        "properties": {
            "admitted": {"type": "boolean"},
            "reason": {"type": ["string", "null"], "enum": [*(r.value for r in Refusal), None]},
            "message": {"type": "string"},
            "ticket": {"anyOf": [_ref("Ticket"), {"type": "null"}]},
            "list": {"type": "string"}, "direction": {"type": "string", "enum": ["entry", "exit"]},
            "inside": {"type": "integer"}, "used_at": nullable_number, "used_list": nullable_string,
            "conflict": {"type": "boolean",
                         "description": "An offline admission (offline: true) that the list refuses: recorded "
                                        "as a checkin_conflict, the holder being in already"},
        },
    }
    return {
        **bodies,
        "CheckinList": checkin_list,
        "CheckinResult": checkin_result,
        "Event": event,
        "Ticket": ticket,
        "Problem": problem,
        "Conflict": conflict,
        "Index": {"type": "object", "required": ["service", "version", "auth"], "properties": {
            "service": {"type": "string"}, "version": {"type": "string"},
            "auth": {"type": "string", "enum": ["on", "off"]}}},
        "Change": {
            "type": "object",
            "required": ["event_id", "ticket_id", "type", "timestamp", "actor", "request_id", "client_ip"],
            "properties": {
                "event_id": {"type": "string",
                             "description": "Stream id, <ms>-<seq>, in order (a batch's tickets: consecutive ones)"},
                "ticket_id": {"type": "string"},
                "type": {"type": "string", "enum": [t.value for t in ChangeType]},
                "timestamp": {"type": "number", "description": "Redis server time of the event"},
                "actor": {"type": "string", "description": "API key name, or anonymous"},
                "request_id": {"type": "string"},
                "client_ip": {"type": "string"},
                "reason": {"type": ["string", "null"], "description": "Why: a refusal code, or a revocation's reason"},
                "list": nullable_string, "direction": nullable_string, "scanned_at": nullable_number,
                "offline": {"type": "boolean", "description": "Admitted offline by the device, uploaded later"},
            },
        },
        "KeySet": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": {
            "type": "object", "required": ["kty", "crv", "kid", "x", "signing"],
            "properties": {"kty": {"const": "OKP"}, "crv": {"const": "Ed25519"}, "kid": {"type": "string"},
                           "use": {"type": "string"}, "alg": {"type": "string"}, "x": {"type": "string"},
                           "signing": {"type": "boolean"}}}}}},
        "TicketToken": {"type": "object", "required": ["ticket", "event", "token", "kid", "qr"], "properties": {
            "ticket": {"type": "string"}, "event": {"type": "string"}, "token": {"type": "string"},
            "kid": {"type": "string"},
            "qr": {"type": "object", "required": ["version", "error", "modules"], "properties": {
                "version": {"type": "integer"}, "error": {"type": "string"}, "modules": {"type": "integer"}}}}},
        "Stats": {
            "type": "object",
            "required": ["total", "valid", "invalid", "revoked", "refused", "processed", "processor_lag", "events"],
            "properties": {
                "total": {"type": "integer"}, "valid": {"type": "integer"},
                "invalid": {"type": "integer", "description": "Used"}, "revoked": {"type": "integer"},
                "refused": {"type": "integer", "description": "Refused transitions (second scans)"},
                "processed": {"type": "object", "additionalProperties": {"type": "integer"}},
                "events": {"type": "object", "description": "Per event: issued, and per list admitted, inside, "
                                                             "exits and refused by reason",
                           "additionalProperties": {"type": "object"}},
                "processor_lag": {"type": ["integer", "null"]},
            },
        },
        "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    }


# What nginx, in front of every replica, or the HTTP layer may answer on any operation.
_GATEWAY_RESPONSES = {
    "400": _problem("The request is not valid HTTP, or a parameter is malformed or repeated"),
    "413": _problem("Body too large"),
    "414": _problem("Request line over 4 KiB (nginx)"),
    "415": _problem("An encoded body (Content-Encoding): bodies are taken as sent"),
    "500": _problem("An unexpected error, logged as a defect"),
    "429": {
        "description": "Over the per-client rate limit (nginx), or over the key's budget of expensive "
                       "work in flight on a replica (over-budget: pages, the feed, /stats, tokens, QR codes)",
        "headers": {"Retry-After": {"schema": {"type": "string"}}},
        "content": {PROBLEM: {"schema": _ref("Problem")}},
    },
    "431": _problem("A request header over 4 KiB (nginx)"),
    "502": _problem("No replica answered (nginx)"),
    "504": _problem("A replica did not answer in time (nginx)"),
}
_CREATED_LINKS = {
    name: {"operationId": op_id, "parameters": {"id": "$response.body#/id"}}
    for name, op_id in {
        "GetTicket": "get_ticket_id", "InvalidateTicket": "post_ticket_id_invalidate",
        "ValidateTicket": "post_ticket_id_validate", "InvalidateByQuery": "patch_ticket_invalidate",
        "ValidateByQuery": "patch_ticket_validate", "InvalidateByQueryPost": "post_ticket_invalidate",
        "ValidateByQueryPost": "post_ticket_validate", "TicketHistory": "get_ticket_id_history",
    }.items()
}


def _deprecated_feed(changes: dict[str, Any]) -> dict[str, Any]:
    """/events: the feed's first name, answering as /changes does, with its deprecation."""
    op = copy.deepcopy(changes["get"])
    op["summary"] = "Deprecated: the change feed's first name; use /changes (role: admin)"
    op["deprecated"] = True
    op["responses"]["200"]["headers"].update({
        "Deprecation": {"schema": {"type": "string"}}, "Sunset": {"schema": {"type": "string"}}})
    return {"get": op}


def _operation_id(method: str, path: str) -> str:
    return f"{method}_{re.sub(r'[^a-z]+', '_', path).strip('_')}".rstrip("_")


def _finish(paths: dict[str, Any]) -> dict[str, Any]:
    """Give every operation its id and the gateway's answers; link creation to the rest."""
    paths["/events"] = _deprecated_feed(paths["/changes"])
    for path, item in paths.items():
        for method in [m for m in item if not m.startswith("x-")]:
            op = item[method] = copy.deepcopy(item[method])
            op["operationId"] = _operation_id(method, path)
            for status, response in _GATEWAY_RESPONSES.items():
                op["responses"].setdefault(status, response)
            if "503" in op["responses"]:  # it reaches Redis
                op["responses"].setdefault("507", _OUT_OF_MEMORY)
    paths["/ticket"]["post"]["responses"]["201"]["links"] = _CREATED_LINKS
    return paths


def build_openapi() -> dict[str, Any]:
    """The whole document, built from the same constants the handlers use."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{SERVICE_NAME} service",
            "version": __version__,
            "description": (
                "Issue tickets and check them at the gate. Errors are RFC 9457 problem details."
            ),
        },
        "paths": _finish(_paths()),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": (
                    "API key from API_KEYS (name:role:secret); roles issuer, scanner, admin. "
                    "With no keys configured, auth is off and no header is needed."
                ),
            }},
        },
    }
