"""The OpenAPI document (service/api/openapi.yaml): the constants it states are the code's, its
request bodies are the code's body types, and the linters API users run on it find nothing.
That every route has its operation is tests/test_api.py's; that every answer validates
against it, the `api` fixture's (conftest.py)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from service import __version__
from service.api.bodies import (
    AnnulBody,
    CheckinBody,
    DeviceBody,
    EnrolBody,
    EventBody,
    ImportBody,
    ListBody,
    RevokeBody,
    TicketBody,
    WebhookBody,
)
from service.api.inputs import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from service.api.openapi import build_openapi, operations
from service.models import ChangeType, Refusal, TicketState
from service.signing import MAX_TOKEN_CHARS, TOKEN_PREFIX

ROOT = Path(__file__).resolve().parent.parent
LINT = ROOT / "tooling" / "lint"
BODIES = (TicketBody, EventBody, RevokeBody, ListBody, CheckinBody, AnnulBody, DeviceBody, EnrolBody, WebhookBody,
          ImportBody)


def test_the_document_states_the_codes_constants() -> None:
    doc = build_openapi()
    components = doc["components"]
    assert doc["info"]["version"] == __version__
    limit = components["parameters"]["Limit"]["schema"]
    assert (limit["maximum"], limit["default"]) == (MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE)
    ticket_id = components["parameters"]["TicketIdPath"]["schema"]
    assert ticket_id["maxLength"] == MAX_TOKEN_CHARS and f"|{TOKEN_PREFIX}[A-Z2-7]+)$" in ticket_id["pattern"]
    schemas = components["schemas"]
    assert schemas["Ticket"]["properties"]["status"]["enum"] == [s.value for s in TicketState]
    assert schemas["Change"]["properties"]["type"]["enum"] == [t.value for t in ChangeType]
    assert schemas["CheckinResult"]["properties"]["reason"]["enum"] == [*(r.value for r in Refusal), None]


def test_each_request_body_is_its_body_types_schema() -> None:
    """Change a body type in bodies.py and this prints the schemas to paste into the YAML."""
    _, expected = msgspec.json.schema_components(BODIES, ref_template="#/components/schemas/{name}")
    schemas = build_openapi()["components"]["schemas"]
    stated = {name: schemas.get(name) for name in expected}
    assert stated == expected, json.dumps(expected, indent=1)


def test_every_operation_is_tagged_described_and_named_once() -> None:
    doc = build_openapi()
    tags = {t["name"] for t in doc["tags"]}
    ops = operations(doc)
    assert len(ops) >= 30
    assert all(op["tags"] and set(op["tags"]) <= tags and op.get("description") for _, _, op in ops)
    ids = [op["operationId"] for _, _, op in ops]
    assert len(ids) == len(set(ids))
    # Every operation gets what nginx may answer, and those reaching Redis its 507.
    assert all({"400", "429", "502", "504"} <= op["responses"].keys() for _, _, op in ops)
    assert all("507" in op["responses"] for _, _, op in ops if "503" in op["responses"])


def _tool(name: str) -> Path:
    path = LINT / "node_modules" / ".bin" / name
    assert path.exists(), f"{path} is missing: `make test` installs it (npm ci --prefix tooling/lint)"
    return path


def _lint(doc: dict[str, Any], tmp_path: Path) -> tuple[list[Any], list[Any]]:
    """Spectral's and Redocly's findings (errors and warnings) on a document."""
    target = tmp_path / "openapi.json"
    target.write_text(json.dumps(doc))
    env = {**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"}
    spectral = subprocess.run(
        [_tool("spectral"), "lint", target, "--ruleset", LINT / ".spectral.yaml", "--format", "json", "--quiet",
         "--fail-severity", "hint"], capture_output=True, text=True, timeout=120, env=env)
    redocly = subprocess.run(
        [_tool("redocly"), "lint", target, "--config", LINT / "redocly.yaml", "--format", "json"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    spectral_found = json.loads(spectral.stdout or "[]")
    redocly_found = json.loads(redocly.stdout)["problems"]
    assert (spectral.returncode == 0) == (spectral_found == []), spectral.stderr
    assert (redocly.returncode == 0) == (not any(p["severity"] == "error" for p in redocly_found)), redocly.stderr
    return spectral_found, redocly_found


@pytest.mark.slow
def test_redocly_and_spectral_find_nothing_and_would_find_a_fault(tmp_path: Path) -> None:
    spectral, redocly = _lint(build_openapi(), tmp_path)
    assert spectral == [] and redocly == []
    # The same document with faults each linter is known for: operations that say nothing of
    # security, one without a description, no licence.
    broken = copy.deepcopy(build_openapi())
    del broken["security"]
    del broken["paths"]["/stats"]["get"]["description"]
    del broken["info"]["license"]
    spectral, redocly = _lint(broken, tmp_path)
    assert {p["code"] for p in spectral} >= {"operation-description"}
    assert {p["ruleId"] for p in redocly} >= {"security-defined", "info-license"}
