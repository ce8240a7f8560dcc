"""The export of every scan of an event (GET /event/{id}/scans) on every backend: what the
tickets processor recorded in the event's scan log, once however often an entry is read
again; NDJSON and CSV; filtered by list and time; resumed from a row's cursor."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from service.api.app import create_app
from service.api.appkeys import CONSUMER
from service.api_keys import ApiKeys
from service.settings import Settings

from .conftest import TEST_SIGNER, AiohttpClient, Api

ADMIN = {"Authorization": "Bearer adm-0123456789abcdef"}
BOX = {"Authorization": "Bearer box-0123456789abcdef"}
KEYS = "ops:admin:adm-0123456789abcdef,box:issuer:box-0123456789abcdef"


@pytest.fixture
async def app_api(aiohttp_client: AiohttpClient, any_redis: Redis) -> tuple[Any, Api]:
    app = create_app(Settings(api_keys=ApiKeys.parse(KEYS), signer=TEST_SIGNER), redis=any_redis)
    return app, Api(await aiohttp_client(app))


async def _process(app: Any) -> None:
    consumer = app[CONSUMER]
    await consumer.ensure_group()
    await consumer.apply(await consumer.read_new("c1", 1000))


async def _export(api: Api, path: str, **headers: str) -> tuple[int, str, str]:
    async with api.client.get(path, headers={**ADMIN, **headers}) as r:
        return r.status, r.headers.get("Content-Type", ""), (await r.read()).decode()


async def _venue(app: Any, api: Api) -> dict[str, Any]:
    """An event with a re-entry hall and a single-entry door: admitted, refused, out, in again,
    annulled; and another event's scan beside it."""
    post = api.post
    event = (await post("/event", json={"name": "Fest"}, headers=ADMIN)).body["id"]
    hall = (await post(f"/event/{event}/list", json={"name": "Hall", "reentry": True}, headers=ADMIN)).body["id"]
    door = (await post(f"/event/{event}/list", json={"name": "Door"}, headers=ADMIN)).body["id"]
    ticket = (await post("/ticket", json={"event": event}, headers=ADMIN)).body["id"]
    other = (await post("/event", json={"name": "Other"}, headers=ADMIN)).body["id"]
    other_list = (await post(f"/event/{other}/list", json={"name": "Gate"}, headers=ADMIN)).body["id"]
    other_ticket = (await post("/ticket", json={"event": other}, headers=ADMIN)).body["id"]
    for body in ({"ticket": ticket, "list": door}, {"ticket": ticket, "list": door},
                 {"ticket": ticket, "list": hall}, {"ticket": ticket, "list": hall, "direction": "exit"},
                 {"ticket": ticket, "list": hall}):
        assert (await post("/checkin", json=body, headers=ADMIN)).status == 200
    assert (await post("/checkin/annul", json={"ticket": ticket, "list": hall}, headers=ADMIN)).status == 200
    assert (await post("/checkin", json={"ticket": other_ticket, "list": other_list}, headers=ADMIN)).status == 200
    await _process(app)
    return {"event": event, "hall": hall, "door": door, "ticket": ticket}


async def test_every_scan_is_exported_once_as_ndjson(app_api: tuple[Any, Api]) -> None:
    app, api = app_api
    v = await _venue(app, api)
    await _process(app)  # nothing new: nothing twice
    status, kind, text = await _export(api, f"/event/{v['event']}/scans")
    assert status == 200 and kind.startswith("application/x-ndjson")
    rows = [json.loads(line) for line in text.splitlines()]
    assert [(r["type"], r["list"], r["direction"], r["reason"]) for r in rows] == [
        ("checkin", v["door"], "entry", None), ("checkin_refused", v["door"], "entry", "already_used"),
        ("checkin", v["hall"], "entry", None), ("checkin", v["hall"], "exit", None),
        ("checkin", v["hall"], "entry", None), ("checkin_annulled", v["hall"], "entry", None)]
    assert all(r["ticket"] == v["ticket"] and r["actor"] == "ops" and r["device_id"] is None for r in rows)
    assert all(r["scanned_at"] <= r["recorded_at"] + 1 for r in rows) and rows == sorted(rows, key=lambda r: (
        int(r["cursor"].split("-")[0]), int(r["cursor"].split("-")[1])))


async def test_the_csv_filters_and_a_cursor_resume(app_api: tuple[Any, Api]) -> None:
    app, api = app_api
    v = await _venue(app, api)
    status, kind, text = await _export(api, f"/event/{v['event']}/scans?list={v['hall']}", Accept="text/csv")
    assert status == 200 and kind.startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(text)))
    assert [r["type"] for r in table] == ["checkin", "checkin", "checkin", "checkin_annulled"]
    assert table[0]["offline"] == "false" and table[0]["reason"] == "" and set(table[0]) >= {"device_name", "cursor"}
    _, _, after = await _export(api, f"/event/{v['event']}/scans?after={table[1]['cursor']}&list={v['hall']}")
    assert [json.loads(line)["cursor"] for line in after.splitlines()] == [r["cursor"] for r in table[2:]]
    _, _, none = await _export(api, f"/event/{v['event']}/scans?until={time.time() - 3600}")
    _, _, all_ = await _export(api, f"/event/{v['event']}/scans?from={time.time() - 3600}")
    assert none == "" and len(all_.splitlines()) == 6


async def test_the_export_refuses_what_it_cannot_answer(app_api: tuple[Any, Api]) -> None:
    app, api = app_api
    v = await _venue(app, api)
    for path, status in ((f"/event/{v['event']}/scans?after=x", 400), ("/event/zz/scans", 400),
                         (f"/event/{v['event']}/scans?list=00000000-0000", 400),
                         (f"/event/{v['event']}/scans?from=soon", 400), (f"/event/{v['event']}/scans?page=2", 400),
                         ("/event/0badcafe/scans", 404)):
        r = await api.get(path, headers=ADMIN)
        assert r.status == status and r.headers["Content-Type"] == "application/problem+json", (path, r.body)
    assert (await api.get(f"/event/{v['event']}/scans", headers=BOX)).status == 403


async def test_a_scan_log_entry_read_again_is_recorded_once(app_api: tuple[Any, Api]) -> None:
    """A processor that dies before it acknowledges reads the same entries again: the scan
    log, written only for a change new to its history, does not grow."""
    app, api = app_api
    v = await _venue(app, api)
    consumer = app[CONSUMER]
    made = (await api.post("/ticket", json={"event": v["event"]}, headers=ADMIN)).body["id"]
    assert (await api.post("/checkin", json={"ticket": made, "list": v["door"]}, headers=ADMIN)).status == 200
    entries = await consumer.read_new("c2", 100)
    await consumer.apply(entries)
    await consumer.apply(entries)  # the same batch again
    _, _, text = await _export(api, f"/event/{v['event']}/scans")
    assert sum(1 for line in text.splitlines() if json.loads(line)["ticket"] == made) == 1


async def test_an_export_cut_short_by_redis_ends_without_its_last_chunk(
    app_api: tuple[Any, Api], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The status went out with the first rows: a failure later must not look like the end of
    the scans. The body breaks off, and the last row's cursor resumes it."""
    import aiohttp

    from service.api import export
    from service.api.appkeys import SCANS
    from service.errors import StoreUnavailable

    app, api = app_api
    v = await _venue(app, api)
    monkeypatch.setattr(export, "PAGE", 2)
    real, calls = app[SCANS].page, []

    async def failing(*args: Any) -> Any:
        calls.append(args)
        if len(calls) > 1:
            raise StoreUnavailable("redis went away")
        return await real(*args)

    monkeypatch.setattr(app[SCANS], "page", failing)
    got = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with api.client.get(f"/event/{v['event']}/scans", headers=ADMIN) as r:
            assert r.status == 200
            async for chunk in r.content.iter_any():
                got += chunk
    rows = [json.loads(line) for line in got.decode().splitlines()]
    assert len(rows) == 2
    monkeypatch.setattr(app[SCANS], "page", real)
    _, _, rest = await _export(api, f"/event/{v['event']}/scans?after={rows[-1]['cursor']}")
    assert len(rest.splitlines()) == 4
