"""Redis failures mapped by what they are: an outage is a 503 with Retry-After, out of memory
a 507 that says so, a defect of ours (a script error) a 500 logged once; and NOSCRIPT after
a restart or failover is no failure at all."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from redis import exceptions as rx
from redis.asyncio import Redis

from service import metrics
from service.api.appkeys import TICKETS
from service.errors import StoreDefect, StoreError, StoreOutOfMemory, StoreUnavailable
from service.processor import _serve_metrics
from service.store import Store
from service.store.calls import meaning
from service.store.scripts import Scripts, script_from
from tooling.procs import free_port

from .conftest import Api
from .test_api import assert_problem


@pytest.mark.parametrize(("raised", "meant"), [
    (rx.ConnectionError("refused"), StoreUnavailable),
    (rx.TimeoutError("slow"), StoreUnavailable),
    (TimeoutError(), StoreUnavailable),
    (rx.BusyLoadingError("LOADING"), StoreUnavailable),
    (rx.ReadOnlyError("READONLY You can't write against a read only replica."), StoreUnavailable),
    (rx.ClusterDownError("CLUSTERDOWN"), StoreUnavailable),
    (rx.MasterDownError("MASTERDOWN"), StoreUnavailable),
    (rx.TryAgainError("TRYAGAIN"), StoreUnavailable),
    (rx.OutOfMemoryError("OOM command not allowed"), StoreOutOfMemory),
    (rx.ResponseError("ERR user_script:1: bad"), StoreDefect),
    (rx.DataError("Invalid input"), StoreDefect),
])
def test_each_redis_failure_has_its_meaning(raised: BaseException, meant: type[StoreError]) -> None:
    assert meaning(raised) is meant


def test_what_is_not_a_redis_failure_is_left_alone() -> None:
    assert meaning(ValueError("x")) is None


def _errors(kind: str) -> float:
    return sum(s.value for m in metrics.REDIS_ERRORS.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels["kind"] == kind)


async def test_out_of_memory_is_a_507_that_says_so(real_api: Api, real_redis: Redis) -> None:
    await real_api.post("/ticket")  # the scripts are loaded while there is room
    before = _errors("out_of_memory")
    await real_redis.config_set("maxmemory", "1")
    try:
        r = await real_api.post("/ticket")
    finally:
        await real_redis.config_set("maxmemory", "0")
    assert r.status == 507 and r.headers["Content-Type"].startswith("application/problem+json")
    assert r.body["type"] == "urn:tickets:problem:store-out-of-memory" and "out of memory" in r.body["detail"]
    assert "Retry-After" not in r.headers
    assert _errors("out_of_memory") == before + 1
    assert (await real_api.post("/ticket")).status == 201


async def test_a_script_error_is_a_500_logged_once_without_a_traceback(
    real_api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = real_api.client.app
    tickets = app[TICKETS]
    buggy = Scripts()
    buggy.create = script_from("create", "return redis.error_reply('a bug')")
    monkeypatch.setattr(tickets._link, "scripts", buggy)
    before = _errors("defect")
    with caplog.at_level(logging.WARNING):
        r = await real_api.post("/ticket")
    assert r.status == 500 and r.body["type"] == "urn:tickets:problem:internal-error"
    assert "a bug" not in r.raw.decode()  # the defect's detail stays in the log
    records = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert len(records) == 1 and records[0].levelno == logging.ERROR and records[0].exc_info is None
    assert "a bug" in records[0].getMessage()
    assert _errors("defect") == before + 1
    # Unavailable is never claimed for it: no Retry-After.
    assert "Retry-After" not in r.headers


async def test_an_empty_script_cache_is_reloaded_transparently(real_api: Api, real_redis: Redis) -> None:
    made = (await real_api.post("/ticket")).body
    await real_redis.script_flush()  # what a restarted or promoted Redis has
    assert (await real_api.post(f"/ticket/{made['id']}/invalidate")).status == 200
    assert (await real_api.post("/ticket")).status == 201


@pytest.mark.parametrize("path", [
    "/event/EVIL-MARKER", "/event/0badf00d/list/EVIL-MARKER", "/ticket/EVIL-MARKER", "/ticket?id=EVIL-MARKER",
])
async def test_a_malformed_id_is_refused_without_echoing_it(api: Api, path: str) -> None:
    r = await api.get(path)
    assert_problem(r, 400)
    assert "EVIL" not in r.raw.decode()


async def test_the_processors_metrics_name_no_version(fake_redis: Redis) -> None:
    port = free_port()
    runner = await _serve_metrics("127.0.0.1", port, Store(fake_redis).checkin)
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/metrics", "/elsewhere"):
                async with http.get(f"http://127.0.0.1:{port}{path}") as r:
                    assert r.headers["Server"] == "tickets", path
    finally:
        await runner.cleanup()
