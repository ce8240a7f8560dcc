"""What a bench result names: the commit it measured (bench/results/README.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measured_commit() -> str:
    """HEAD's short id, with `+changes` when tracked files other than the results differ from
    it: a run of a tree no commit holds says so."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
    return commit + ("+changes" if changed else "")
