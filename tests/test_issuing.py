"""Events, tickets of an event (type, holder, seat, validity window), exact event capacity
under concurrency, and revocation, through the HTTP API against fakeredis and a real
redis-server alike."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from service.models import event_of
from service.store import keys

from .conftest import FROM_PROXY, Api
from .test_api import assert_problem


async def new_event(api: Api, **body: Any) -> dict[str, Any]:
    r = await api.post("/event", json={"name": "Festival", **body})
    assert r.status == 201, r.body
    assert r.headers["Location"] == f"/event/{r.body['id']}"
    made: dict[str, Any] = r.body
    return made


async def test_an_event_is_made_read_and_listed(any_api: Api) -> None:
    made = await new_event(any_api, starts_at=1_900_000_000, ends_at=1_900_086_400, capacity=500)
    assert made == {"id": made["id"], "name": "Festival", "starts_at": 1_900_000_000, "ends_at": 1_900_086_400,
                    "capacity": 500, "issued": 0}
    assert (await any_api.get(f"/event/{made['id']}")).body == made
    others = [await new_event(any_api, name=f"Night {i}") for i in range(4)]
    seen, url = [], "/event?limit=2"
    while url:
        r = await any_api.get(url)
        seen += [e["id"] for e in r.body]
        link = r.headers.get("Link")
        url = link[link.index("/event"): link.index(">")] if link else ""
    assert sorted(seen) == sorted([made["id"], *(e["id"] for e in others)])


async def test_an_unknown_or_malformed_event(any_api: Api) -> None:
    assert_problem(await any_api.get("/event/0000beef"), 404)
    assert_problem(await any_api.get("/event/nope"), 400)
    r = await any_api.post("/ticket", json={"event": "0000beef"})
    assert_problem(r, 404)
    assert r.body["type"] == "urn:tickets:problem:event-not-found"


async def test_a_ticket_of_an_event_carries_its_fields_and_its_event_in_its_id(any_api: Api, any_redis: Redis) -> None:
    event = await new_event(any_api)
    body = {"event": event["id"], "type": "vip", "holder": "Ada Lovelace", "seat": "A-12",
            "valid_from": 1_900_000_000.5, "valid_until": 1_900_003_600}
    r = await any_api.post("/ticket", json=body)
    assert r.status == 201
    ticket = r.body
    assert {k: ticket[k] for k in body} == body and ticket["status"] == "valid" and ticket["valid"] is True
    assert uuid.UUID(ticket["id"]).version == 8 and ticket["id"].startswith(event["id"])
    assert event_of(ticket["id"]) == event["id"]
    assert await any_redis.exists(keys.ticket(ticket["id"]))
    assert (await any_api.get(f"/ticket/{ticket['id']}")).body == ticket
    assert (await any_api.get(f"/event/{event['id']}")).body["issued"] == 1
    listed = (await any_api.get("/ticket?limit=1000")).body
    assert ticket in listed


@pytest.mark.parametrize("body", [
    {"type": ""}, {"type": "x" * 33}, {"type": "has space"}, {"holder": "line\nbreak"}, {"holder": "x" * 201},
    {"seat": "tab\there"}, {"valid_from": 10, "valid_until": 5}, {"valid_from": -1}, {"valid_from": True},
    {"valid_from": "soon"}, {"event": "DEFAULT"}, {"event": "0000beeF"}, {"colour": "red"}, {"type": None, "x": 1},
    [], "ticket", 7,
])
async def test_a_bad_ticket_body_is_a_400_naming_the_member(any_api: Api, body: Any) -> None:
    r = await any_api.post("/ticket", json=body)
    assert_problem(r, 400)
    assert r.body["type"] == "urn:tickets:problem:malformed-body"
    assert (await any_api.get("/ticket")).body == []


@pytest.mark.parametrize("body", [
    {}, {"name": ""}, {"name": "x" * 201}, {"name": "a\x00b"}, {"name": "N", "capacity": 0},
    {"name": "N", "capacity": 1.5}, {"name": "N", "capacity": True}, {"name": "N", "starts_at": 9, "ends_at": 9},
    {"name": "N", "venue": "here"},
])
async def test_a_bad_event_body_is_a_400(any_api: Api, body: Any) -> None:
    assert_problem(await any_api.post("/event", json=body), 400)


async def test_capacity_caps_issuing_exactly_under_concurrency(real_api: Api) -> None:
    event = await new_event(real_api, capacity=30)

    async def issue(i: int) -> int:
        r = await real_api.post("/ticket", json={"event": event["id"], "type": "general"})
        if r.status == 409:
            assert r.body["type"] == "urn:tickets:problem:sold-out"
        return r.status

    statuses = await asyncio.gather(*(issue(i) for i in range(100)))
    assert sorted(statuses) == [201] * 30 + [409] * 70
    assert (await real_api.get(f"/event/{event['id']}")).body["issued"] == 30
    assert len((await real_api.get("/ticket?limit=1000")).body) == 30


async def test_a_resent_create_after_sell_out_gets_its_ticket_not_sold_out(any_api: Api) -> None:
    event = await new_event(any_api, capacity=1)
    resend = {"X-Request-Id": "ab" * 16, **FROM_PROXY}
    first = await any_api.post("/ticket", json={"event": event["id"]}, headers=resend)
    again = await any_api.post("/ticket", json={"event": event["id"]}, headers=resend)
    assert first.status == again.status == 201 and again.body == first.body
    assert again.headers["Idempotent-Replayed"] == "true"
    assert_problem(await any_api.post("/ticket", json={"event": event["id"]}), 409)


async def test_an_idempotency_key_on_an_event_ticket(any_api: Api) -> None:
    event = await new_event(any_api, capacity=5)
    key = {"Idempotency-Key": "order-1"}
    first = await any_api.post("/ticket", json={"event": event["id"], "holder": "Ann"}, headers=key)
    again = await any_api.post("/ticket", json={"event": event["id"], "holder": "Ann"}, headers=key)
    assert first.status == again.status == 201 and again.body == first.body
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await any_api.post("/ticket", json={"event": event["id"], "holder": "Bob"}, headers=key)
    assert_problem(other, 422)
    assert (await any_api.get(f"/event/{event['id']}")).body["issued"] == 1


async def test_a_revoked_ticket_is_refused_for_ever(any_api: Api) -> None:
    event = await new_event(any_api)
    ticket = (await any_api.post("/ticket", json={"event": event["id"], "type": "day"})).body
    r = await any_api.post(f"/ticket/{ticket['id']}/revoke", json={"reason": "refunded"})
    assert r.status == 200 and r.body == {**ticket, "valid": False, "status": "revoked"}
    for path in (f"/ticket/{ticket['id']}/invalidate", f"/ticket/{ticket['id']}/validate",
                 f"/ticket/invalidate?id={ticket['id']}", f"/ticket/{ticket['id']}/revoke"):
        refused = await any_api.post(path)
        assert_problem(refused, 409)
        assert refused.body["ticket"]["status"] == "revoked"
    stats = (await any_api.get("/stats")).body
    assert stats["revoked"] == 1 and stats["valid"] == 0 and stats["refused"] == 4


async def test_a_used_ticket_can_be_revoked_and_the_reason_is_in_the_feed(any_api: Api) -> None:
    ticket = (await any_api.post("/ticket")).body
    assert (await any_api.post(f"/ticket/{ticket['id']}/invalidate")).status == 200
    assert (await any_api.post(f"/ticket/{ticket['id']}/revoke", json={"reason": "chargeback"})).status == 200
    feed = (await any_api.get("/changes?limit=100")).body
    assert [(e["type"], e["reason"]) for e in feed] == [
        ("created", None), ("invalidated", None), ("revoked", "chargeback")]
    stats = (await any_api.get("/stats")).body
    assert (stats["valid"], stats["invalid"], stats["revoked"]) == (0, 0, 1)


async def test_revocation_racing_a_scan_has_one_consistent_outcome(real_api: Api) -> None:
    tickets = [(await real_api.post("/ticket")).body["id"] for _ in range(40)]

    async def race(tid: str) -> tuple[int, int, str]:
        scan, revoke = await asyncio.gather(real_api.post(f"/ticket/{tid}/invalidate"),
                                            real_api.post(f"/ticket/{tid}/revoke"))
        return scan.status, revoke.status, (await real_api.get(f"/ticket/{tid}")).body["status"]

    outcomes = await asyncio.gather(*(race(t) for t in tickets))
    # Admitted then revoked, or refused as revoked: never admitted after the revocation.
    assert set(outcomes) <= {(200, 200, "revoked"), (409, 200, "revoked")}
    assert all(status == "revoked" for *_, status in outcomes)


async def test_the_feed_moved_to_changes_and_events_answers_while_deprecated(any_api: Api) -> None:
    await any_api.post("/ticket")
    new, old = await any_api.get("/changes"), await any_api.get("/events")
    assert new.status == old.status == 200 and new.body == old.body and len(new.body) == 1
    assert "Deprecation" not in new.headers
    assert old.headers["Deprecation"].startswith("@") and old.headers["Sunset"].endswith("GMT")
    assert 'rel="successor-version"' in old.headers["Link"] and "/changes" in old.headers["Link"]


async def test_a_batch_issues_every_ticket_in_order(any_api: Api) -> None:
    event = await new_event(any_api, capacity=10)
    items = [{"event": event["id"], "type": "day", "seat": f"R{i}"} for i in range(7)]
    r = await any_api.post("/ticket/batch", json={"tickets": items})
    assert r.status == 201
    assert [t["seat"] for t in r.body["tickets"]] == [f"R{i}" for i in range(7)]
    assert len({t["id"] for t in r.body["tickets"]}) == 7
    for made in r.body["tickets"]:
        assert (await any_api.get(f"/ticket/{made['id']}")).body == made
    assert (await any_api.get(f"/event/{event['id']}")).body["issued"] == 7
    # The rest of the capacity cannot hold four more: none is issued.
    r = await any_api.post("/ticket/batch", json={"tickets": items[:4]})
    assert_problem(r, 409)
    assert (await any_api.get(f"/event/{event['id']}")).body["issued"] == 7


async def test_a_batch_with_bad_items_issues_nothing_and_names_each(any_api: Api) -> None:
    items: list[Any] = [{}, {"type": "has space"}, {}, {"holder": "x\n"}, "nope", {}]
    r = await any_api.post("/ticket/batch", json={"tickets": items})
    assert_problem(r, 400)
    assert [e["index"] for e in r.body["errors"]] == [1, 3, 4]
    assert (await any_api.get("/ticket")).body == []


async def test_a_batch_is_of_one_event(any_api: Api) -> None:
    event = await new_event(any_api)
    r = await any_api.post("/ticket/batch", json={"tickets": [{"event": event["id"]}, {}]})
    assert_problem(r, 400)
    assert [e["index"] for e in r.body["errors"]] == [1]


async def test_a_batch_item_nested_too_deep_is_the_body_too_deep(any_api: Api) -> None:
    deep = b'{"tickets": [{}, {"type": ' + b"[" * 7 + b"]" * 7 + b"}]}"
    r = await any_api.post("/ticket/batch", data=deep, headers={"Content-Type": "application/json"})
    assert_problem(r, 400)
    assert "nests deeper" in r.body["detail"]
    assert (await any_api.get("/ticket")).body == []


@pytest.mark.parametrize("body", [{}, {"tickets": []}, {"tickets": [{}] * 1001}, {"tickets": {}}, {"x": []}])
async def test_a_malformed_batch_is_a_400(any_api: Api, body: Any) -> None:
    assert_problem(await any_api.post("/ticket/batch", json=body), 400)


async def test_a_default_event_batch_of_a_thousand_lands_in_one_shard(any_api: Api, any_redis: Redis) -> None:
    r = await any_api.post("/ticket/batch", json={"tickets": [{}] * 1000})
    assert r.status == 201 and len(r.body["tickets"]) == 1000
    ids = {t["id"] for t in r.body["tickets"]}
    assert len(ids) == 1000 and len({i[0] for i in ids}) == 1
    assert (await any_api.get("/stats")).body["total"] == 1000


async def test_a_batch_retried_with_its_key_or_resent_by_nginx_is_issued_once(any_api: Api) -> None:
    event = await new_event(any_api, capacity=4)
    body = {"tickets": [{"event": event["id"]}, {"event": event["id"]}]}
    key = {"Idempotency-Key": "bulk-1"}
    first = await any_api.post("/ticket/batch", json=body, headers=key)
    again = await any_api.post("/ticket/batch", json=body, headers=key)
    assert first.status == again.status == 201 and again.body == first.body
    assert again.headers["Idempotent-Replayed"] == "true"
    assert_problem(await any_api.post("/ticket/batch", json={"tickets": body["tickets"][:1]}, headers=key), 422)
    resend = {"X-Request-Id": "cd" * 16, **FROM_PROXY}
    one = await any_api.post("/ticket/batch", json=body, headers=resend)
    two = await any_api.post("/ticket/batch", json=body, headers=resend)
    assert one.body == two.body and two.headers["Idempotent-Replayed"] == "true"
    assert (await any_api.get(f"/event/{event['id']}")).body["issued"] == 4
