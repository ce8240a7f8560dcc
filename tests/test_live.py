"""The live view (GET /event/{id}/live) on every backend: the picture's arithmetic, the first
message, updates as scans land, a reconnect that resumes from its last id, a slow viewer's
updates folded, and the supervisor's role."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from service.api.app import create_app
from service.api.appkeys import CONSUMER, LIVE
from service.api.live_hub import Viewer
from service.api_keys import ApiKeys
from service.live import MINUTES, Picture, ScanTick, merge, minute_of
from service.models import ChangeType
from service.settings import Settings

from .conftest import TEST_SIGNER, AiohttpClient, Api
from .test_api import assert_problem

ADMIN = {"Authorization": "Bearer adm-0123456789abcdef"}
WATCH = {"Authorization": "Bearer sup-0123456789abcdef"}
GATE = {"Authorization": "Bearer gate-0123456789abcdef"}
KEYS = "ops:admin:adm-0123456789abcdef,doors:supervisor:sup-0123456789abcdef,gate:scanner:gate-0123456789abcdef"


def _tick(n: int, list_id: str, kind: ChangeType, at: float, direction: str = "entry") -> ScanTick:
    return ScanTick(f"{int(at * 1000)}-{n}", list_id, kind, direction, at, None)


def test_the_picture_counts_entries_exits_and_refusals_per_minute_and_keeps_an_hour() -> None:
    p = Picture("0123abcd", 30)
    now = time.time()
    touched = p.count([_tick(0, "l1", ChangeType.CHECKIN, now), _tick(1, "l1", ChangeType.CHECKIN, now, "exit"),
                       _tick(2, "l1", ChangeType.CHECKIN_REFUSED, now), _tick(3, "l1", ChangeType.CHECKIN, now),
                       _tick(4, "l2", ChangeType.CHECKIN_ANNULLED, now),
                       _tick(5, "l1", ChangeType.CHECKIN, now - 3600 - 60)])
    assert touched["l1"][minute_of(now)] == [2, 1, 1] and "l2" not in touched
    p.prune(now)
    assert list(p.minutes["l1"]) == [minute_of(now)]  # the scan of more than an hour ago is gone
    assert minute_of(now) - MINUTES + 1 <= min(p.minutes["l1"])


def test_since_a_position_is_every_counter_and_the_minutes_from_it() -> None:
    p = Picture("0123abcd", 30)
    now = time.time()
    p.count([_tick(0, "l1", ChangeType.CHECKIN, now - 600), _tick(1, "l1", ChangeType.CHECKIN, now)])
    p.lists = {"l1": {"admitted": 2}}
    since = p.since(f"{int((now - 60) * 1000)}-0", now)
    assert since is not None and since["type"] == "update" and since["lists"] == {"l1": {"admitted": 2}}
    assert list(since["minutes"]["l1"]) == [str(minute_of(now))]
    assert p.since(f"{int((now - 7200) * 1000)}-0", now) is None  # out of the hour: a snapshot
    assert p.since("yesterday", now) is None and p.since("1-", now) is None


def test_updates_fold_as_a_viewer_would_read_them() -> None:
    viewer = Viewer({"type": "snapshot"})
    assert viewer.pending == {"type": "snapshot"}
    viewer.pending = None
    viewer.offer({"type": "update", "lists": {"a": {"inside": 1}}, "minutes": {"a": {"9": [1, 0, 0]}}})
    viewer.offer({"type": "update", "lists": {"b": {"inside": 4}}, "minutes": {"a": {"9": [2, 0, 0], "10": [1, 0, 0]}}})
    assert viewer.pending == {"type": "update", "lists": {"a": {"inside": 1}, "b": {"inside": 4}},
                              "minutes": {"a": {"9": [2, 0, 0], "10": [1, 0, 0]}}}
    into: dict[str, Any] = {}
    merge(into, {"devices": {"d": None}})
    assert into == {"devices": {"d": None}}


@pytest.fixture
async def app_api(aiohttp_client: AiohttpClient, any_redis: Redis) -> tuple[Any, Api]:
    settings = Settings(api_keys=ApiKeys.parse(KEYS), signer=TEST_SIGNER, live_poll_ms=20, live_refresh_ms=200,
                        live_heartbeat_s=1)
    app = create_app(settings, redis=any_redis)
    return app, Api(await aiohttp_client(app))


class Stream:
    """An open live stream, read message by message."""

    def __init__(self, response: Any) -> None:
        self.response = response

    async def next(self, timeout_s: float = 10) -> dict[str, Any]:
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout_s):
            while True:
                line = (await self.response.content.readline()).decode().rstrip("\n")
                if line == "" and "data" in fields:
                    return {**json.loads(fields["data"]), "sse_id": fields.get("id"), "sse_event": fields.get("event")}
                if line and not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    fields[name] = value

    async def until(self, test: Any, timeout_s: float = 10) -> dict[str, Any]:
        """Messages folded as a page folds them, until `test` holds of the picture."""
        picture: dict[str, Any] = {}
        deadline = time.monotonic() + timeout_s
        while True:
            message = await self.next(deadline - time.monotonic())
            if message["type"] == "snapshot":
                picture = {}
            merge(picture, {k: v for k, v in message.items() if not k.startswith("sse_")})
            if test(picture):
                return picture


async def _venue(api: Api) -> tuple[str, str, list[str]]:
    event = (await api.post("/event", json={"name": "Doors"}, headers=ADMIN)).body["id"]
    door = (await api.post(f"/event/{event}/list", json={"name": "Door", "capacity": 3, "reentry": True},
                           headers=ADMIN)).body["id"]
    tickets = [(await api.post("/ticket", json={"event": event}, headers=ADMIN)).body["id"] for _ in range(3)]
    return event, door, tickets


async def _process(app: Any) -> None:
    consumer = app[CONSUMER]
    await consumer.ensure_group()
    await consumer.apply(await consumer.read_new("c1", 1000))


async def test_a_viewer_sees_the_picture_then_each_scan(app_api: tuple[Any, Api]) -> None:
    app, api = app_api
    event, door, tickets = await _venue(api)
    async with api.client.get(f"/event/{event}/live", headers=WATCH) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
        assert r.headers["Cache-Control"] == "no-store"
        stream = Stream(r)
        first = await stream.next()
        assert first["sse_event"] == first["type"] == "snapshot" and first["sse_id"] == first["position"]
        assert first["lists"][door] == {"id": door, "name": "Door", "capacity": 3, "reentry": True, "inside": 0,
                                        "admitted": 0, "exits": 0, "refused": {}, "conflicts": 0}
        assert first["event"] == {"id": event, "name": "Doors", "capacity": None, "issued": 3, "admitted": 0,
                                  "inside": 0}
        for t in tickets:
            await api.post("/checkin", json={"ticket": t, "list": door}, headers=GATE)
        await api.post("/checkin", json={"ticket": tickets[0], "list": door}, headers=GATE)  # already inside
        await _process(app)
        picture = await stream.until(lambda p: p.get("lists", {}).get(door, {}).get("refused"))
        assert picture["lists"][door]["inside"] == 3 and picture["lists"][door]["refused"] == {"already_inside": 1}
        buckets = picture["minutes"][door].values()
        assert [sum(b[i] for b in buckets) for i in range(3)] == [3, 0, 1]  # entries, exits, refused
    # Gone: the worker notices at its next write (a heartbeat at the latest) and lets it go.
    async with asyncio.timeout(10):
        while app[LIVE].viewers():
            await asyncio.sleep(0.05)


async def test_a_reconnect_resumes_from_its_last_id(app_api: tuple[Any, Api]) -> None:
    app, api = app_api
    event, door, tickets = await _venue(api)
    await api.post("/checkin", json={"ticket": tickets[0], "list": door}, headers=GATE)
    await _process(app)
    async with api.client.get(f"/event/{event}/live", headers=WATCH) as r:
        first = await Stream(r).next()
        assert first["lists"][door]["admitted"] == 1
        last_id = first["sse_id"]
    # Away: two more scans land meanwhile.
    for t in tickets[1:]:
        await api.post("/checkin", json={"ticket": t, "list": door}, headers=GATE)
    await _process(app)
    async with api.client.get(f"/event/{event}/live", headers={**WATCH, "Last-Event-ID": last_id}) as r:
        stream = Stream(r)
        again = await stream.next()
        assert again["type"] == "update"  # what changed, not the hour again
        picture = await stream.until(lambda p: p["lists"][door]["admitted"] == 3)
        assert picture["lists"][door]["inside"] == 3
        assert sum(b[0] for b in picture["minutes"][door].values()) >= 2
    # A position out of the hour, or no position: the whole picture.
    async with api.client.get(f"/event/{event}/live", headers={**WATCH, "Last-Event-ID": "12-0"}) as r:
        assert (await Stream(r).next())["type"] == "snapshot"


async def test_who_may_watch(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    event, door, _ = await _venue(api)
    assert_problem(await api.get(f"/event/{event}/live", headers=GATE), 403)
    assert_problem(await api.get("/event/0badc0de/live", headers=WATCH), 404)
    # A supervisor reads what it watches with, and writes nothing.
    assert (await api.get(f"/event/{event}/list/{door}", headers=WATCH)).status == 200
    assert (await api.get("/stats", headers=WATCH)).status == 200
    assert (await api.get("/device", headers=WATCH)).status == 200
    assert_problem(await api.post("/ticket", json={"event": event}, headers=WATCH), 403)
    assert_problem(await api.post(f"/event/{event}/list", json={"name": "x"}, headers=WATCH), 403)
    assert_problem(await api.post("/device", json={"name": "x", "role": "scanner"}, headers=WATCH), 403)
