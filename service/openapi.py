"""The OpenAPI 3.1 document served at /openapi.json. Tests check every route against it."""

from __future__ import annotations

from typing import Any

from . import SERVICE_NAME, __version__
from .handlers import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

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
    "description": "Redis is not answering; nothing was changed",
    "headers": {"Retry-After": {"schema": {"type": "string"}}},
    "content": {PROBLEM: {"schema": _ref("Problem")}},
}
_ID_QUERY = {
    "name": "id", "in": "query", "required": True,
    "schema": {"type": "string"}, "description": "Ticket id (a UUID).",
}
_ID_PATH = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_REPLAYED = {
    "Idempotent-Replayed": {
        "description": "Present when this is the stored first answer to a replayed request",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def _transition(verb: str, params: list[dict[str, Any]], already: str) -> dict[str, Any]:
    return {
        "summary": f"{verb.capitalize()} a ticket",
        "description": (
            f"Atomic compare-and-set inside Redis. Of many concurrent {verb} calls on one "
            "ticket exactly one gets 200. A replay of the same request (same X-Request-Id, as "
            "nginx sends when it retries on another replica) gets the first answer back."
        ),
        "parameters": params,
        "responses": {
            "200": _ok("The ticket after the change", _ref("Ticket"), _REPLAYED),
            "400": _problem("Missing or malformed id, or an unknown query parameter"),
            "404": _problem("No such ticket"),
            "409": _problem(f"The ticket is already {already}; `ticket` holds it", "Conflict"),
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
        "/readyz": {"get": {"summary": "Readiness", "responses": {
            "200": _ok("Redis answers", _ref("Status")), "503": _UNAVAILABLE}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {
            "200": _ok("OpenAPI 3.1 document", {"type": "object"})}}},
        "/ticket": {
            "post": {
                "summary": "Create a ticket",
                "requestBody": {"required": False, "content": {JSON: {"schema": {
                    "type": "object", "maxProperties": 0}}}},
                "responses": {
                    "201": _ok("The new ticket", _ref("Ticket"), {
                        "Location": {"schema": {"type": "string"}}}),
                    "400": _problem("Malformed body or unknown query parameter"),
                    "413": _problem("Body too large"),
                    "503": _UNAVAILABLE,
                },
            },
            "get": {
                "summary": "One ticket (with ?id=, as a one-element list) or a page of all",
                "parameters": [
                    {"name": "id", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "required": False, "schema": {
                        "type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE,
                        "default": DEFAULT_PAGE_SIZE}},
                    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "Opaque; copy it from the Link rel=next header."},
                ],
                "responses": {
                    "200": _ok("Tickets", {"type": "array", "items": _ref("Ticket")}, {
                        "Link": {"description": "rel=next while more remain", "schema": {"type": "string"}}}),
                    "400": _problem("Malformed id, limit or cursor"),
                    "404": _problem("No ticket with that id"),
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/ticket/{id}": {"get": {
            "summary": "One ticket",
            "parameters": [_ID_PATH],
            "responses": {
                "200": _ok("The ticket", _ref("Ticket")),
                "400": _problem("Malformed id"),
                "404": _problem("No such ticket"),
                "503": _UNAVAILABLE,
            },
        }},
        "/ticket/invalidate": _query_transition("invalidate", "invalid"),
        "/ticket/validate": _query_transition("validate", "valid"),
        "/ticket/{id}/invalidate": {"post": _transition("invalidate", [_ID_PATH], "invalid")},
        "/ticket/{id}/validate": {"post": _transition("validate", [_ID_PATH], "valid")},
    }


def _schemas() -> dict[str, Any]:
    ticket = {
        "type": "object",
        "required": ["id", "timestamp", "valid"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "timestamp": {"type": "number", "description": "Creation time, seconds since the epoch"},
            "valid": {"type": "boolean"},
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
    return {
        "Ticket": ticket,
        "Problem": problem,
        "Conflict": conflict,
        "Index": {"type": "object", "required": ["service", "version"], "properties": {
            "service": {"type": "string"}, "version": {"type": "string"}}},
        "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    }


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
        "paths": _paths(),
        "components": {"schemas": _schemas()},
    }
