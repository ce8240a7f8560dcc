"""What a bench result names: the commit it measured (bench/results/README.md)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def measured_commit() -> str:
    """HEAD's short id, with `+changes` when tracked files other than the results differ from
    it: a run of a tree no commit holds says so."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
    return commit + ("+changes" if changed else "")


def write_result(kind: str, measured: dict[str, Any], table: Callable[[dict[str, Any]], str]) -> None:
    """Save a run as bench/results/<kind>-<date>-<commit>.json and .md (its table), and print
    the table: the date and the commit measured go in front of the figures."""
    result = {"date": dt.date.today().isoformat(), "commit": measured_commit(), **measured}
    out = ROOT / "bench" / "results" / f"{kind}-{result['date']}-{result['commit']}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(table(result))
    print(table(result))
