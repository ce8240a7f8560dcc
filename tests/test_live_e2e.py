"""The live view under load, on the real stack (two replicas, the processor, nginx): 500
viewers of one event while scans run. Every viewer sees every scan, and Redis's commands per
second stay within 10% of those with one viewer (bench/live.py measures the same, longer, with
the delays: `make bench-live`)."""

from __future__ import annotations

import asyncio

import pytest

from bench.live import KEYS, measure

from .conftest import MakeStack

pytestmark = pytest.mark.e2e


def test_five_hundred_viewers_cost_redis_what_one_does(make_stack: MakeStack) -> None:
    stack = make_stack("live", env={"API_KEYS": KEYS})
    result = asyncio.run(measure(stack, viewers=500, seconds=6, rate=20))
    one, many = result["one"], result["many"]
    print("LIVE viewers 1 / 500: Redis commands per s", one["redis_commands_per_s"], many["redis_commands_per_s"],
          "ratio", result["commands_ratio"], "; scan to screen p50/p99 ms", one["delay_p50_ms"], one["delay_p99_ms"],
          "/", many["delay_p50_ms"], many["delay_p99_ms"])
    assert one["every_viewer_saw_every_scan"] and many["every_viewer_saw_every_scan"]
    assert many["delays"] == 500 * many["scans"]
    assert result["commands_ratio"] <= 1.10, result
