"""The short chaos run of each topology (`make chaos` is the long one): the stack spread over
seven hosts in network namespaces, 5 ms each way between hosts, a venue's workload through
nginx, and a nemesis that partitions, pauses and kills; then the checker over the record and
the final state (tooling/chaos). Each run prints a `CHAOS <topology> ...` line with its seed
and figures; the record and report stay under the test's tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tooling.chaos.checker import Checker, FinalState, _tally
from tooling.chaos.history import Kind, Op, Outcome
from tooling.chaos.nemesis import FAULTS
from tooling.chaos.run import RunConfig, run
from tooling.chaos.workload import Venue

# Fixed, so that CI is repeatable; `make chaos` draws new ones.
SEEDS = {"sentinel": 31, "cluster": 32}


@pytest.mark.e2e
@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
def test_a_short_chaos_run_finds_no_violation(topology: str, tmp_path: Path) -> None:
    """Every fault once, as shipped: on Sentinel every replica confirms each write
    (REDIS_MIN_REPLICAS_ACK=2, tooling/redis_nodes.py), on a Cluster a master's one replica."""
    config = RunConfig(topology, SEEDS[topology], rounds=len(FAULTS), fault_s=5.0, calm_s=2.0)
    report = run(config, tmp_path)
    print("\n" + report.summary())
    assert sorted(f.kind for f in report.faults) == sorted(FAULTS)
    outcomes = report.outcomes()
    assert outcomes["ok"] > 200, outcomes  # the workload did run, and through the faults
    assert {op.kind for op in report.ops if op.outcome is Outcome.OK} >= {Kind.CREATE, Kind.ENTRY, Kind.EXIT}
    assert [v.to_json() for v in report.violations] == []
    assert (tmp_path / "history.jsonl").read_text().count("\n") == len(report.ops)


@pytest.mark.e2e
def test_with_one_confirming_replica_sentinel_loses_acknowledged_writes(tmp_path: Path) -> None:
    """Why Sentinel's writes wait for every replica: with one (REDIS_MIN_REPLICAS_ACK=1), a
    replica cut from its master misses writes the other confirmed; the master dies and the
    other is cut off; Sentinel promotes the one that missed them, and they are gone."""
    config = RunConfig("sentinel", SEEDS["sentinel"], rounds=1, fault_s=6.0, calm_s=2.0,
                       kinds=("stale-promotion",), env={"REDIS_MIN_REPLICAS_ACK": "1"})
    report = run(config, tmp_path)
    print("\n" + report.summary())
    lost = [v for v in report.violations if v.rule == "lost"]
    assert lost and "cut off" in report.faults[0].detail, report.faults[0].detail
    # Each one names an operation the client was told had succeeded.
    assert all(" ok 20" in v.ops[0] for v in lost)


# --- the checker itself, on records made by hand ---------------------------------------------

VENUE = Venue("e1", capacity=3, lists={"gate": "g1", "hall": "h1", "area": "a1"})


def _state(histories: dict[str, list[dict[str, Any]]], **lists: dict[str, int]) -> FinalState:
    shown = {name: {"inside": 0, "admitted": 0, "exits": 0} for name in VENUE.lists}
    shown.update(lists)
    tickets = {t: {"id": t, "status": "valid"} for t in histories}
    return FinalState(tickets, {t: list(h) for t, h in histories.items()}, shown, len(histories))


def _entry(ticket: str, rid: str, list_name: str = "gate", admitted: bool = True, inside: int = 1) -> Op:
    return Op(0, 0, Kind.ENTRY, rid, ticket=ticket, list_name=list_name, outcome=Outcome.OK, status=200,
              answer={"admitted": admitted, "inside": inside})


def test_the_checker_finds_a_lost_scan_and_a_double_admission() -> None:
    history = [{"type": "created", "request_id": "c"}, {"type": "checkin", "list": "g1", "direction": "entry",
                                                         "request_id": "s1"}]
    ops = [_entry("t1", "s1"), _entry("t1", "s2")]  # told twice "admitted"; s2 is in no history
    found = Checker(ops, VENUE, _state({"t1": history}, gate={"inside": 1, "admitted": 1, "exits": 0})).check()
    assert sorted(v.rule for v in found) == ["double", "lost"]
    assert "s2" in found[0].ops[0] or "s2" in found[1].ops[0]


def test_the_checker_counts_an_annul_and_finds_a_wrong_counter_and_an_overfull_area() -> None:
    history = [{"type": "checkin", "list": "a1", "direction": "entry", "request_id": "s1"},
               {"type": "checkin_annulled", "list": "a1", "request_id": "n1"},
               {"type": "checkin", "list": "a1", "direction": "entry", "request_id": "s2"}]
    assert _tally(history, "a1") == {"admitted": 1, "inside": 1}
    ops = [_entry("t1", "s1", "area"), _entry("t1", "s2", "area", inside=99)]
    found = Checker(ops, VENUE, _state({"t1": history}, area={"inside": 1, "admitted": 2, "exits": 0})).check()
    assert sorted(v.rule for v in found) == ["capacity", "counters"]


def test_an_unknown_outcome_may_be_found_or_not() -> None:
    op = _entry("t1", "s9")
    op.outcome = Outcome.UNKNOWN
    assert Checker([op], VENUE, _state({"t1": []})).check() == []
