"""One table of check-in decisions (tests/cases/checkin.json) against the service, on every
backend, and against the gate's offline twin (web/gate/book.js, in Node): the same verdicts,
in the same sentences, but for what a gate offline cannot know."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from service.signing import TicketSigner

from .conftest import Api

ROOT = Path(__file__).resolve().parent.parent
CASES = json.loads((ROOT / "tests" / "cases" / "checkin.json").read_text())["cases"]


async def _ok(api: Api, method: str, path: str, body: Any = None) -> Any:
    r = await api.request(method, path, json=body)
    assert r.status < 300, (path, r.body)
    return r.body


async def _setup(api: Api, case: dict[str, Any], now: float, form: str) -> dict[str, Any]:
    """The case's event, list and ticket, as the service made them, and what is scanned: the
    ticket's token, or (form "code") the outside code of a ticket imported with the same fields."""
    times = {k: now + v for k, v in case.get("event", {}).items()}
    event = await _ok(api, "POST", "/event", {"name": case["name"][:100], **times})
    gate = await _ok(api, "POST", f"/event/{event['id']}/list", {"name": "Gate", **case.get("list", {})})
    spec = dict(case.get("ticket", {}))
    owner = event["id"]
    if spec.pop("other_event", False):
        owner = (await _ok(api, "POST", "/event", {"name": "Another"}))["id"]
    spec.update({k: now + spec[k] for k in ("valid_from", "valid_until") if k in spec})
    if form == "code":
        token = f"EXT-{uuid.uuid4().hex[:12]}"
        body = {"source": "shop", "codes": [{"code": token, **spec}]}
        imported = await _ok(api, "POST", f"/event/{owner}/import", body)
        ticket = imported["tickets"][0]
    else:
        ticket = await _ok(api, "POST", "/ticket", {"event": owner, **spec})
        token = (await _ok(api, "GET", f"/ticket/{ticket['id']}/token"))["token"]
    book = await _ok(api, "GET", f"/event/{event['id']}/list/{gate['id']}/book")
    return {"event": event, "list": gate, "ticket_id": ticket["id"], "token": token, "book": book["tickets"]}


async def _step(api: Api, step: str, made: dict[str, Any]) -> None:
    list_id, ticket_id = made["list"]["id"], made["ticket_id"]
    if step in ("entry", "exit"):
        await _ok(api, "POST", "/checkin", {"ticket": made["token"], "list": list_id, "direction": step})
    elif step == "annul":
        await _ok(api, "POST", "/checkin/annul", {"ticket": ticket_id, "list": list_id})
    elif step == "someone else enters":
        other = await _ok(api, "POST", "/ticket", {"event": made["event"]["id"]})
        verdict = await _ok(api, "POST", "/checkin", {"ticket": other["id"], "list": list_id})
        assert verdict["admitted"]
    else:
        await _ok(api, "POST", f"/ticket/{ticket_id}/{step}", {} if step == "revoke" else None)


@pytest.mark.parametrize("form", ["token", "code"])
async def test_the_service_decides_every_case_and_the_gate_offline_agrees(
    any_api: Api, settings: Any, form: str,
) -> None:
    for_book = []
    got = {}
    for case in CASES:
        now = time.time()
        made = await _setup(any_api, case, now, form)
        for step in case.get("steps", []):
            await _step(any_api, step, made)
        verdict = await _ok(any_api, "POST", "/checkin", {"ticket": made["token"], "list": made["list"]["id"],
                                                          "direction": case["scan"]})
        assert verdict["admitted"] == (verdict["reason"] is None)
        got[case["name"]] = (verdict["reason"], verdict["message"] if verdict["reason"] else None)
        if "service_only" not in case:
            for_book.append({**made, "name": case["name"], "steps": case.get("steps", []), "scan": case["scan"],
                             "now_s": time.time()})
    expect = {c["name"]: c.get("expect_imported", c["expect"]) if form == "code" else c["expect"] for c in CASES}
    assert {name: reason for name, (reason, _) in got.items()} == expect
    signer: TicketSigner = settings.signer
    offline = _book(for_book, signer.jwks())
    assert len(offline) == len(for_book) >= 20
    assert {o["name"]: (o["reason"], o["message"]) for o in offline} == \
        {c["name"]: got[c["name"]] for c in for_book}


def _book(cases: list[dict[str, Any]], jwks: dict[str, object]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node, "Node.js runs the gate's book (make test installs it)"
    run = subprocess.run([node, "--experimental-default-type=module", ROOT / "tests" / "cases" / "book.mjs"],
                         input=json.dumps({"cases": cases, "jwks": jwks}), capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    found: list[dict[str, Any]] = json.loads(run.stdout)
    return found


def test_the_gate_says_every_refusal_in_the_services_sentence() -> None:
    from service.models import Refusal

    node = shutil.which("node")
    assert node
    script = ("const { message } = await import(process.argv[1]);"
              "process.stdout.write(JSON.stringify(JSON.parse(process.argv[2]).map(message)));")
    reasons = [r.value for r in Refusal]
    run = subprocess.run([node, "--experimental-default-type=module", "--input-type=module", "-e", script,
                          (ROOT / "web" / "gate" / "book.js").as_uri(), json.dumps(reasons)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert dict(zip(reasons, json.loads(run.stdout), strict=True)) == {r.value: r.message for r in Refusal}
