"""Signed tickets: the token a QR code carries, its verification and key rotation, the QR
images, tokens accepted wherever an id is, refused tokens as refused scans, offline uploads
that conflict, and one event's change feed (what a gate keeps its offline copy from)."""

from __future__ import annotations

import base64
import io
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import segno
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from PIL import Image
from redis.asyncio import Redis

from service import metrics
from service.api.app import create_app
from service.api.appkeys import CONSUMER
from service.api_keys import ApiKeys
from service.models import Refusal, Ticket, TicketState, new_ticket_id
from service.settings import Settings
from service.signing import DOMAIN, TicketSigner, TokenRefused
from service.store import keys

from .conftest import TEST_SIGNER, AiohttpClient, Api
from .test_api import assert_problem
from .test_checkin import Venue


def _ticket(**fields: Any) -> Ticket:
    return Ticket(new_ticket_id("c0ffee00"), time.time(), TicketState.VALID, **fields)


def _refusal(signer: TicketSigner, token: str) -> Refusal:
    with pytest.raises(TokenRefused) as caught:
        signer.verify(token)
    return caught.value.reason


def _raw(token: str) -> bytearray:
    text = token[2:]
    return bytearray(base64.b32decode(text + "=" * (-len(text) % 8)))


def _text(raw: bytes | bytearray) -> str:
    return "TK" + base64.b32encode(bytes(raw)).decode().rstrip("=")


@pytest.mark.parametrize("fields", [{}, {"type": "vip"}, {"type": "x" * 32, "valid_from": 1.9e9 + 0.5,
                                                           "valid_until": 1.9e9 + 3600.25},
                                    {"valid_from": 0.0, "valid_until": 2.0**33 - 0.5}])
def test_a_token_says_what_it_signs(fields: dict[str, Any]) -> None:
    ticket = _ticket(**fields)
    claims = TEST_SIGNER.verify(TEST_SIGNER.sign(ticket))
    assert claims.ticket_id == ticket.id and claims.event == "c0ffee00"
    assert claims.type == fields.get("type")
    # Whole seconds, never narrower than the ticket's own window.
    if "valid_from" in fields:
        assert claims.valid_from == math.floor(fields["valid_from"])
        assert claims.valid_until == math.ceil(fields["valid_until"])


def test_every_altered_byte_is_refused() -> None:
    token = TEST_SIGNER.sign(_ticket(type="vip", valid_from=1.9e9, valid_until=1.91e9))
    raw = _raw(token)
    for i in range(len(raw)):
        altered = bytearray(raw)
        altered[i] ^= 0x01
        reason = _refusal(TEST_SIGNER, _text(altered))
        # The key id is read before the signature is.
        expected = Refusal.UNKNOWN_KEY if i in (1, 2) else Refusal.BAD_SIGNATURE
        assert reason == expected, i
    raw[0] ^= 0x30  # another version
    assert _refusal(TEST_SIGNER, _text(raw)) is Refusal.MALFORMED_TOKEN


def test_malformed_tokens_are_refused_before_any_key_is_used() -> None:
    token = TEST_SIGNER.sign(_ticket())
    for bad in ("TK", token[:-10], token + "A" * 200, token.lower(), token[:40] + "1" + token[41:], "TK" + "A" * 140):
        assert _refusal(TEST_SIGNER, bad) is Refusal.MALFORMED_TOKEN, bad
    # One token, one spelling: base32's spare bits in the last character must be zero.
    raw = _raw(token)
    last = token[-1]
    respelt = token[:-1] + next(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
                                if c != last and _raw(token[:-1] + c) == raw)
    assert _refusal(TEST_SIGNER, respelt) is Refusal.MALFORMED_TOKEN


def test_a_signature_by_the_right_key_over_a_bad_layout_is_malformed() -> None:
    key = TEST_SIGNER.signing_key
    assert key is not None and key.private is not None
    body = bytes([0x14]) + bytes.fromhex(key.kid) + bytes(16) + b"\x05ab"  # type says 5, holds 2
    token = _text(body + key.private.sign(DOMAIN + body))
    assert _refusal(TEST_SIGNER, token) is Refusal.MALFORMED_TOKEN


def test_rotation_signs_with_the_newest_and_verifies_with_all_until_removed() -> None:
    old_pem, new_pem = TicketSigner.generate_pem(), TicketSigner.generate_pem()
    before = TicketSigner.parse(old_pem)
    old_token = before.sign(_ticket())
    after = TicketSigner.parse(old_pem + new_pem)
    new_token = after.sign(_ticket())
    assert after.verify(old_token).kid == before.keys[0].kid
    assert after.verify(new_token).kid == after.keys[1].kid != before.keys[0].kid
    jwks: Any = after.jwks()
    assert [k["signing"] for k in jwks["keys"]] == [False, True]
    # The old key kept as public only: it verifies and never signs.
    public_pem = after.keys[0].public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    retiring = TicketSigner.parse(new_pem + public_pem)
    assert retiring.verify(old_token).kid == before.keys[0].kid
    assert retiring.signing_key is not None and retiring.signing_key.kid == after.keys[1].kid
    retired = TicketSigner.parse(new_pem)
    assert _refusal(retired, old_token) is Refusal.UNKNOWN_KEY
    assert retired.verify(new_token).ticket_id


def test_bad_key_files_are_refused_at_start() -> None:
    pem = TicketSigner.generate_pem()
    with pytest.raises(ValueError, match="share a key id"):
        TicketSigner.parse(pem + pem)
    with pytest.raises(ValueError, match="no PEM key"):
        TicketSigner.parse("not a key")
    with pytest.raises(ValueError, match="only Ed25519"):
        other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        TicketSigner.parse(other.decode())
    assert Settings.from_env({"TICKET_SIGNING_KEYS": pem}).signer.signing_key is not None


def test_the_qr_code_of_a_usual_ticket_is_small() -> None:
    """Version 6 (41 modules) for a ticket with a short type; 7 with a validity window too.
    The figures are in docs/checkin.md#signed-tickets; this holds them."""
    for fields, version in (({"type": "vip"}, 6), ({"type": "general", "valid_from": 1.9e9,
                                                      "valid_until": 1.91e9}, 7)):
        qr = segno.make_qr(TEST_SIGNER.sign(_ticket(**fields)), error="m")
        assert qr.mode == "alphanumeric" and int(qr.version) <= version and qr.error in "MQH"


async def _raw_get(api: Api, path: str) -> tuple[int, str, bytes]:
    async with api.client.get(path) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def test_a_ticket_has_a_token_and_its_qr_code(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    made = (await any_api.post("/ticket", json={"event": venue.id, "type": "vip", "holder": "Ada"})).body
    r = await any_api.get(f"/ticket/{made['id']}/token")
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    token = r.body["token"]
    assert TEST_SIGNER.verify(token).ticket_id == made["id"] and r.body["qr"]["version"] <= 6
    assert r.body["qr"]["modules"] == 17 + 4 * r.body["qr"]["version"]
    keys = (await any_api.get("/keys")).body["keys"]
    assert [k["kid"] for k in keys] == [r.body["kid"]] and keys[0]["crv"] == "Ed25519"
    status, kind, svg = await _raw_get(any_api, f"/ticket/{made['id']}/qr.svg")
    assert status == 200 and kind == "image/svg+xml" and b"<svg" in svg and made["id"].encode() in svg
    status, kind, png = await _raw_get(any_api, f"/ticket/{token}/qr.png")
    assert status == 200 and kind == "image/png"
    image = Image.open(io.BytesIO(png))
    side = (r.body["qr"]["modules"] + 8) * 8
    assert image.size == (side, side) and len(image.convert("L").getcolors() or []) == 2
    assert (await any_api.get(f"/ticket/{new_ticket_id(venue.id)}/token")).status == 404


async def test_a_token_is_taken_wherever_an_id_is(any_api: Api) -> None:
    made = (await any_api.post("/ticket")).body
    token = (await any_api.get(f"/ticket/{made['id']}/token")).body["token"]
    assert (await any_api.get(f"/ticket/{token}")).body["id"] == made["id"]
    assert (await any_api.get("/ticket", params={"id": token})).body[0]["id"] == made["id"]
    r = await any_api.request("PATCH", f"/ticket/invalidate?id={token}")
    assert r.status == 200 and r.body["valid"] is False
    raw = _raw(token)
    raw[5] ^= 0x40
    refused = metrics.TOKENS_REFUSED.labels("bad_signature")
    before = refused._value.get()
    r = await any_api.get(f"/ticket/{_text(raw)}")
    assert_problem(r, 400, "ticket-token-refused")
    assert refused._value.get() == before + 1
    assert r.body["reason"] == "bad_signature" and "altered or forged" in r.body["detail"]


async def test_without_a_signing_key_codes_are_not_made(aiohttp_client: AiohttpClient, fake_redis: Redis,
                                                        settings: Settings) -> None:
    api = Api(await aiohttp_client(create_app(replace(settings, signer=TicketSigner()), redis=fake_redis)))
    made = (await api.post("/ticket")).body
    assert_problem(await api.get(f"/ticket/{made['id']}/token"), 501, "signing-off")
    assert (await api.get("/keys")).body == {"keys": []}
    token = TEST_SIGNER.sign(_ticket())
    assert (await api.get(f"/ticket/{token}")).body["reason"] == "unknown_key"


async def test_a_refused_token_is_a_refused_scan(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    gate = await venue.list()
    ticket = await venue.ticket(type="vip")
    token = (await any_api.get(f"/ticket/{ticket}/token")).body["token"]
    raw = _raw(token)
    raw[len(raw) // 2] ^= 0x10
    forged = await venue.scan(_text(raw), gate)
    assert forged["admitted"] is False and forged["reason"] == "bad_signature" and forged["ticket"] is None
    unknown = await venue.scan(TicketSigner.parse(TicketSigner.generate_pem()).sign(_ticket()), gate)
    assert unknown["reason"] == "unknown_key"
    admitted = await venue.scan(token, gate)
    assert admitted["admitted"] is True and admitted["ticket"]["id"] == ticket
    again = await venue.scan(token, gate)
    assert again["reason"] == "already_used" and again["used_at"] is not None
    counts = (await any_api.get(f"/event/{venue.id}/list/{gate['id']}")).body
    assert counts["admitted"] == 1
    assert {k: v for k, v in counts["refused"].items() if v} == {"bad_signature": 1, "unknown_key": 1,
                                                                 "already_used": 1}


async def test_an_offline_admission_uploaded_late_is_a_conflict_not_a_refusal(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    gate = await venue.list()
    ticket = await venue.ticket()
    online = await venue.scan(ticket, gate)
    assert online["admitted"] is True and online["conflict"] is False
    scanned_at = time.time() - 30
    late = await venue.scan(ticket, gate, offline=True, scanned_at=scanned_at)
    assert late["admitted"] is False and late["conflict"] is True and late["reason"] == "already_used"
    fresh = await venue.scan(await venue.ticket(), gate, offline=True, scanned_at=scanned_at)
    assert fresh["admitted"] is True and fresh["conflict"] is False
    counts = (await any_api.get(f"/event/{venue.id}/list/{gate['id']}")).body
    assert counts["admitted"] == 2 and counts["conflicts"] == 1 and not any(counts["refused"].values())
    r = await any_api.post("/checkin", json={"ticket": ticket, "list": gate["id"], "offline": True})
    assert_problem(r, 400, "malformed-body")
    feed = (await any_api.get("/changes", params={"event": venue.id, "limit": "100"})).body
    conflict = [e for e in feed if e["type"] == "checkin_conflict"]
    assert len(conflict) == 1 and conflict[0]["ticket_id"] == ticket and conflict[0]["offline"] is True
    assert conflict[0]["reason"] == "already_used" and conflict[0]["scanned_at"] == pytest.approx(scanned_at)


async def test_the_processor_keeps_a_conflict_in_the_ticket_history(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    gate = await venue.list()
    ticket = await venue.ticket()
    other = await Venue.open(any_api, name="Other")
    while keys.shard_of(other.id) == keys.shard_of(venue.id):  # 1 in 64: its tickets would be here
        other = await Venue.open(any_api, name="Other")
    stranger = await other.ticket()
    await venue.scan(ticket, gate)
    await venue.scan(ticket, gate, offline=True, scanned_at=time.time() - 5)
    await venue.scan(stranger, gate)  # another event's ticket: kept in counters, not a history here
    raw = _raw((await any_api.get(f"/ticket/{ticket}/token")).body["token"])
    raw[-1] ^= 1
    await venue.scan(_text(raw), gate)
    consumer = any_api.client.app[CONSUMER]
    await consumer.ensure_group()
    entries = await consumer.read_new("t", 1000)
    assert await consumer.apply(entries) == len(entries) == 6  # 2 created, 4 scans
    assert await consumer.apply(entries) == 0
    history = (await any_api.get(f"/ticket/{ticket}/history")).body
    assert [h["type"] for h in history] == ["created", "checkin", "checkin_conflict"]
    assert [h["type"] for h in (await any_api.get(f"/ticket/{stranger}/history")).body] == ["created"]


async def test_one_events_feed_holds_its_changes_only(any_api: Api) -> None:
    venues = [await Venue.open(any_api, name=f"V{i}") for i in range(2)]
    gates = [await v.list() for v in venues]
    mine = [await venues[0].ticket() for _ in range(3)]
    theirs = [await venues[1].ticket() for _ in range(3)]
    await venues[0].scan(mine[0], gates[0])
    await venues[1].scan(theirs[0], gates[1])
    seen: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(50):
        params = {"event": venues[0].id, "limit": "2", **({"after": after} if after else {})}
        r = await any_api.get("/changes", params=params)
        seen += r.body
        nxt = r.headers["Link"].split("after=")[1].split("&")[0].split(">")[0]
        if nxt == after:
            break
        after = nxt
    assert [(e["ticket_id"], e["type"]) for e in seen] == [*((t, "created") for t in mine), (mine[0], "checkin")]


async def test_scanners_read_their_events_feed_and_lists(aiohttp_client: AiohttpClient, fake_redis: Redis,
                                                         settings: Settings) -> None:
    ring = ApiKeys.parse("ops:admin:ops-0123456789abcdef,gate:scanner:gate-0123456789abcdef,"
                         "bound:scanner:bound-0123456789abcdef:0badcafe")
    api = Api(await aiohttp_client(create_app(replace(settings, api_keys=ring), redis=fake_redis)))

    def auth(secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}

    event = (await api.post("/event", json={"name": "E"}, headers=auth("ops-0123456789abcdef"))).body["id"]
    made = await api.post(f"/event/{event}/list", json={"name": "North"}, headers=auth("ops-0123456789abcdef"))
    lists = await api.get(f"/event/{event}/list", headers=auth("gate-0123456789abcdef"))
    assert lists.status == 200 and [x["id"] for x in lists.body] == [made.body["id"]]
    assert (await api.get("/changes", params={"event": event}, headers=auth("gate-0123456789abcdef"))).status == 200
    assert_problem(await api.get("/changes", headers=auth("gate-0123456789abcdef")), 403, "forbidden")
    assert_problem(await api.get("/changes", params={"event": event}, headers=auth("bound-0123456789abcdef")),
                   403, "forbidden")
    assert (await api.get("/keys")).status == 200  # public


def test_token_layout_constants_match_the_gate_page() -> None:
    """web/gate/token.js reads the same layout: its domain string and prefix are these."""
    js = (Path(__file__).parent.parent / "web" / "gate" / "token.js").read_text()
    assert f'"{DOMAIN.decode()[:-1]}\\0"' in js and 'TOKEN_PREFIX = "TK"' in js


@pytest.mark.parametrize("reentry", [False, True])
async def test_an_upload_of_a_scan_that_landed_is_that_scan_not_a_conflict(any_api: Api, reentry: bool) -> None:
    """A gate's online scan timed out after it landed, so the gate admitted offline and
    queued it: its upload (same scan time) is recognised, and nothing is counted twice."""
    venue = await Venue.open(any_api)
    gate = await venue.list(reentry=reentry)
    ticket = await venue.ticket()
    scanned_at = round(time.time() - 3, 6)
    landed = await venue.scan(ticket, gate, scanned_at=scanned_at)
    assert landed["admitted"] is True
    upload = await venue.scan(ticket, gate, scanned_at=scanned_at, offline=True)
    assert upload["admitted"] is True and upload["conflict"] is False
    other_time = await venue.scan(ticket, gate, scanned_at=scanned_at + 1, offline=True)
    assert other_time["conflict"] is True
    counts = (await any_api.get(f"/event/{venue.id}/list/{gate['id']}")).body
    assert (counts["admitted"], counts["inside"], counts["conflicts"]) == (1, 1, 1)
    feed = (await any_api.get("/changes", params={"event": venue.id})).body
    assert [e["type"] for e in feed if e["ticket_id"] == ticket] == ["created", "checkin", "checkin_conflict"]
