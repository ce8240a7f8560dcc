"""`python -m tooling.chaos`: runs for each topology asked, then a Markdown table of them.

    python -m tooling.chaos --topology sentinel cluster --rounds 12 --seed 7
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path

from .nemesis import FAULTS
from .run import Report, RunConfig, run

ROOT = Path(__file__).resolve().parents[2]


def table(reports: list[Report]) -> str:
    rows = ["| topology | seed | operations (ok / refused / unknown) | faults | violations | "
            "per fault: longest stretch without a write, writes not acknowledged |",
            "| --- | --- | --- | --- | --- | --- |"]
    for r in reports:
        o = r.outcomes()
        kinds = ", ".join(f"{f.kind} {f.unavailable_s:.1f} s {f.unacknowledged:.0%}" for f in r.faults)
        found = ", ".join(f"{v.rule}: {v.what}" for v in r.violations[:5]) or "none"
        if len(r.violations) > 5:
            found += f" (and {len(r.violations) - 5} more)"
        rows.append(f"| {r.config.topology} | {r.config.seed} | {len(r.ops)} ({o['ok']} / {o['fail']} / "
                    f"{o['unknown']}) | {len(r.faults)} | {found} | {kinds} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tooling.chaos")
    parser.add_argument("--topology", nargs="+", default=["sentinel", "cluster"], choices=["sentinel", "cluster"])
    parser.add_argument("--seed", type=int, default=None, help="the schedule's seed (default: a new one, printed)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--fault-s", type=float, default=10.0)
    parser.add_argument("--calm-s", type=float, default=5.0)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--faults", nargs="+", default=list(FAULTS), choices=list(FAULTS))
    parser.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="settings for the API and the processor, e.g. REDIS_MIN_REPLICAS_ACK=2")
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var" / "chaos")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1, 1_000_000)
    reports = []
    for topology in args.topology:
        var_dir = args.var_dir / topology
        shutil.rmtree(var_dir, ignore_errors=True)
        env = dict(item.split("=", 1) for item in args.env)
        config = RunConfig(topology, seed, args.rounds, args.fault_s, args.calm_s, args.delay_ms, args.workers,
                           tuple(args.faults), env)
        report = run(config, var_dir)
        print(report.summary(), flush=True)
        for violation in report.violations:
            print(f"  {violation.rule}: {violation.what}", *(f"    {op}" for op in violation.ops), sep="\n")
        print(f"  record: {var_dir / 'history.jsonl'}, report: {var_dir / 'report.json'}", flush=True)
        reports.append(report)
    print(table(reports))
    sys.exit(1 if any(r.violations for r in reports) else 0)


if __name__ == "__main__":
    main()
