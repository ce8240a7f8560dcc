"""Devices through the API on every backend: made by an admin, enrolled with the code once,
scanning within their bindings, refused with device-revoked once rolled or revoked, and
authenticated from the worker's cache (device_cache.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis.asyncio import Redis

from service.api.app import create_app
from service.api.appkeys import DEVICE_CACHE, DEVICES
from service.api_keys import ApiKeys
from service.errors import StoreUnavailable
from service.settings import Settings

from .conftest import TEST_SIGNER, AiohttpClient, Api

ADMIN = {"Authorization": "Bearer adm-0123456789abcdef"}
KEYS = "ops:admin:adm-0123456789abcdef,box:issuer:box-0123456789abcdef"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def app_api(aiohttp_client: AiohttpClient, any_redis: Redis) -> tuple[Any, Api]:
    app = create_app(Settings(api_keys=ApiKeys.parse(KEYS), signer=TEST_SIGNER), redis=any_redis)
    return app, Api(await aiohttp_client(app))


async def _venue(api: Api) -> tuple[str, str, str]:
    event = (await api.post("/event", json={"name": "Fest"}, headers=ADMIN)).body["id"]
    north = (await api.post(f"/event/{event}/list", json={"name": "North"}, headers=ADMIN)).body["id"]
    south = (await api.post(f"/event/{event}/list", json={"name": "South"}, headers=ADMIN)).body["id"]
    return event, north, south


async def _device(api: Api, **body: Any) -> tuple[dict[str, Any], str]:
    made = await api.post("/device", json={"name": "North 1", "role": "scanner", **body}, headers=ADMIN)
    assert made.status == 201 and made.headers["Cache-Control"] == "no-store", made.body
    assert made.body["enrolment"]["qr_svg"].startswith("<svg")
    assert made.body["state"] == "pending" and "/gate/#enrol=tke_" in made.body["enrolment"]["url"]
    enrolled = await api.post("/device/enrol", json={"token": made.body["enrolment"]["token"],
                                                     "software": "gate/1.0", "hardware": "Pixel 7"})
    assert enrolled.status == 201 and enrolled.headers["Cache-Control"] == "no-store", enrolled.body
    return enrolled.body["device"], enrolled.body["key"]


async def test_a_device_enrols_once_and_scans_within_its_bindings(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    event, north, south = await _venue(api)
    device, key = await _device(api, event=event, lists=[north], direction="entry")
    assert device["state"] == "active" and device["lists"] == [north] and device["software"] == "gate/1.0"
    ticket = (await api.post("/ticket", json={"event": event}, headers=ADMIN)).body["id"]
    scan = await api.post("/checkin", json={"ticket": ticket, "list": north}, headers=bearer(key))
    assert scan.status == 200 and scan.body["admitted"]
    for body in ({"ticket": ticket, "list": south}, {"ticket": ticket, "list": north, "direction": "exit"}):
        refused = await api.post("/checkin", json=body, headers=bearer(key))
        assert refused.status == 403 and refused.body["type"].endswith("forbidden")
    history = (await api.get(f"/ticket/{ticket}", headers=bearer(key)))
    assert history.status == 200
    other = (await api.post("/event", json={"name": "Other"}, headers=ADMIN)).body["id"]
    assert (await api.get(f"/event/{other}/list", headers=bearer(key))).status == 403
    assert (await api.post("/device", json={"name": "x", "role": "scanner"}, headers=bearer(key))).status == 403
    shown = await api.get(f"/device/{device['id']}", headers=ADMIN)
    assert shown.status == 200 and shown.body["state"] == "active" and "key" not in shown.body


async def test_an_issuer_device_issues_and_cannot_make_devices(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    _, key = await _device(api, role="issuer")
    assert (await api.post("/ticket", headers=bearer(key))).status == 201
    assert (await api.post("/device", json={"name": "x", "role": "admin"}, headers=bearer(key))).status == 403
    assert (await api.post("/device", json={"name": "x", "role": "issuer", "direction": "entry"},
                           headers=ADMIN)).status == 400


async def test_a_spent_or_forged_code_is_refused_alike(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    made = (await api.post("/device", json={"name": "Tablet", "role": "issuer"}, headers=ADMIN)).body
    code = made["enrolment"]["token"]
    assert (await api.post("/device/enrol", json={"token": code})).status == 201
    for token in (code, code[:-1] + ("A" if code[-1] != "A" else "B"), "tke_nonsense"):
        refused = await api.post("/device/enrol", json={"token": token})
        assert refused.status == 403 and refused.body["type"].endswith("enrolment-refused")


async def test_a_revoked_or_rolled_key_is_refused_as_such_once_the_worker_checks(app_api: tuple[Any, Api]) -> None:
    app, api = app_api
    event, north, _ = await _venue(api)
    device, key = await _device(api, event=event)
    cache = app[DEVICE_CACHE]
    await cache.check()
    assert (await api.get(f"/event/{event}", headers=bearer(key))).status == 200  # cached now
    rolled = await api.post(f"/device/{device['id']}/roll", headers=ADMIN)
    assert rolled.status == 200 and rolled.body["key"] != key
    await cache.check()  # what the watch does every DEVICE_CACHE_CHECK_MS
    old = await api.get(f"/event/{event}", headers=bearer(key))
    assert old.status == 401 and old.body["type"].endswith("device-revoked")
    assert "invalid_token" in old.headers["WWW-Authenticate"]
    new_key = rolled.body["key"]
    assert (await api.get(f"/event/{event}", headers=bearer(new_key))).status == 200
    revoked = await api.post(f"/device/{device['id']}/revoke", headers=ADMIN)
    assert revoked.status == 200 and revoked.body["state"] == "revoked"
    await cache.check()
    gone = await api.get(f"/event/{event}", headers=bearer(new_key))
    assert gone.status == 401 and gone.body["type"].endswith("device-revoked")
    assert (await api.post(f"/device/{device['id']}/revoke", headers=ADMIN)).status == 409
    unknown = await api.get(f"/event/{event}", headers=bearer("tkd_0123456789abcdef." + "A" * 43))
    assert unknown.status == 401 and unknown.body["type"].endswith("unauthenticated")
    listed = (await api.get("/device", headers=ADMIN)).body
    assert [d["state"] for d in listed] == ["revoked"]


async def test_a_cached_device_costs_no_read_and_a_cut_off_worker_reads_again(
    app_api: tuple[Any, Api], monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, api = app_api
    event, _, _ = await _venue(api)
    device, key = await _device(api, event=event)
    store, cache = app[DEVICES], app[DEVICE_CACHE]
    reads: list[str] = []
    read = store.get_with_key

    async def counted(device_id: str) -> Any:
        reads.append(device_id)
        return await read(device_id)

    monkeypatch.setattr(store, "get_with_key", counted)
    await cache.check()
    for _ in range(5):
        assert (await api.get(f"/event/{event}", headers=bearer(key))).status == 200
    assert reads == [device["id"]]  # the first request only
    # Cut off from Redis while the device is revoked: the check fails, the cache goes, and
    # the first request after reaching Redis again reads the device and is refused.
    generation = cache.background.generation

    async def unreachable() -> int:
        raise StoreUnavailable("cut off")

    monkeypatch.setattr(cache.background, "generation", unreachable)
    await cache.check()
    await store.revoke(device["id"])
    monkeypatch.setattr(cache.background, "generation", generation)
    refused = await api.get(f"/event/{event}", headers=bearer(key))
    assert refused.status == 401 and reads == [device["id"]] * 2


def test_the_device_settings_come_from_the_environment() -> None:
    s = Settings.from_env({"ENROLMENT_TTL_S": "60", "DEVICE_CACHE_CHECK_MS": "100"})
    assert (s.enrolment_ttl_s, s.device_cache_check_ms) == (60, 100)
    assert (Settings().enrolment_ttl_s, Settings().device_cache_check_ms) == (900, 250)
    for bad in ({"ENROLMENT_TTL_S": "0"}, {"DEVICE_CACHE_CHECK_MS": "5"}, {"ENROLMENT_TTL_S": "soon"}):
        with pytest.raises(ValueError):
            Settings.from_env(bad)


async def test_stats_count_each_devices_scans_by_outcome(app_api: tuple[Any, Api]) -> None:
    from service.api.appkeys import CONSUMER

    app, api = app_api
    event, north, _ = await _venue(api)
    device, key = await _device(api, event=event)
    other, other_key = await _device(api, event=event)
    ticket = (await api.post("/ticket", json={"event": event}, headers=ADMIN)).body["id"]
    for k in (key, key, other_key):  # admitted, then twice refused (already used)
        assert (await api.post("/checkin", json={"ticket": ticket, "list": north}, headers=bearer(k))).status == 200
    await api.post("/checkin", json={"ticket": ticket, "list": north}, headers=ADMIN)  # an API key's: no device
    consumer = app[CONSUMER]
    await consumer.ensure_group()
    await consumer.apply(await consumer.read_new("c1", 100))
    stats = (await api.get("/stats", headers=ADMIN)).body
    mine = stats["devices"][device["id"]]
    assert mine == {"checkin": 1, "checkin_refused": 1} and len(stats["devices"]) == 2
    assert (await api.get(f"/device/{device['id']}", headers=ADMIN)).body["scans"] == mine
    listed = {d["id"]: d["scans"] for d in (await api.get("/device", headers=ADMIN)).body}
    assert listed == {device["id"]: mine, other["id"]: {"checkin_refused": 1}}
    assert sum(n for counts in stats["devices"].values() for n in counts.values()) == 3
    history = (await api.get(f"/ticket/{ticket}/history", headers=ADMIN)).body
    mine_as, other_as = f"North 1#{device['id']}", f"North 1#{other['id']}"
    assert [h["actor"] for h in history] == ["ops", mine_as, mine_as, other_as, "ops"]
    mine_is, other_is = {"id": device["id"], "name": "North 1"}, {"id": other["id"], "name": "North 1"}
    assert [h["device"] for h in history] == [None, mine_is, mine_is, other_is, None]
    feed = (await api.get(f"/changes?event={event}&limit=1000", headers=ADMIN)).body
    assert [c["device"] for c in feed if c["ticket_id"] == ticket] == [None, mine_is, mine_is, other_is, None]


async def test_last_seen_is_written_by_a_flush_not_per_request_and_only_moves_forward(
    app_api: tuple[Any, Api],
) -> None:
    app, api = app_api
    event, _, _ = await _venue(api)
    device, key = await _device(api, event=event)
    before = time.time()
    for _ in range(3):
        assert (await api.get(f"/event/{event}", headers=bearer(key))).status == 200
    assert (await api.get(f"/device/{device['id']}", headers=ADMIN)).body["last_seen"] is None  # not yet flushed
    await app[DEVICE_CACHE].flush_seen()
    seen = (await api.get(f"/device/{device['id']}", headers=ADMIN)).body["last_seen"]
    assert before <= seen <= time.time()
    await app[DEVICES].seen({device["id"]: before - 60, "0123456789abcdef": before})  # older; and a device gone
    assert (await api.get(f"/device/{device['id']}", headers=ADMIN)).body["last_seen"] == seen
    assert (await api.get("/device/0123456789abcdef", headers=ADMIN)).status == 404


async def test_the_enrolment_link_is_where_the_caller_reached_the_service(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    body = {"name": "Tablet", "role": "issuer"}
    cases = [({"Origin": "https://box.venue.example:8443"}, "https://box.venue.example:8443/gate/#enrol=tke_"),
             ({"X-Forwarded-Host": "venue.local:8080"}, "http://venue.local:8080/gate/#enrol=tke_"),
             ({"Origin": "javascript:alert(1)", "X-Forwarded-Host": "a b"}, "http://127.0.0.1:")]
    for headers, start in cases:
        made = await api.post("/device", json=body, headers={**ADMIN, **headers})
        assert made.status == 201 and made.body["enrolment"]["url"].startswith(start), made.body["enrolment"]["url"]
