"""Lighthouse (12.2, its mobile defaults: a mid-range phone on a slow 4G network) on the gate
page of a local stack, served by nginx as in production.

    make bench-lighthouse

Results go to bench/results/lighthouse-<date>-<commit>.json (the scores and the metrics that
make them) and .md; the whole report is not kept."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.commit import measured_commit
from tooling.stack import LocalStack

ROOT = Path(__file__).resolve().parent.parent
LIGHTHOUSE = ROOT / "bench" / "lighthouse" / "node_modules" / ".bin" / "lighthouse"
PAGES = ("/gate/", "/office/")
METRICS = ("first-contentful-paint", "largest-contentful-paint", "total-blocking-time", "cumulative-layout-shift",
           "speed-index")
RUNS = 3


def _run(url: str, out: Path) -> dict[str, Any]:
    chrome = shutil.which("chromium") or "/usr/bin/chromium"
    subprocess.run(
        [LIGHTHOUSE, url, "--quiet", "--output=json", f"--output-path={out}",
         "--chrome-flags=--headless=new --no-sandbox --disable-gpu"],
        check=True, timeout=300, env={**os.environ, "CHROME_PATH": chrome})
    report: dict[str, Any] = json.loads(out.read_text())
    scores = {k: round(v["score"] * 100) for k, v in report["categories"].items() if v["score"] is not None}
    audits = report["audits"]
    metrics = {m: audits[m]["numericValue"] for m in METRICS}
    return {"scores": scores, "metrics": metrics,
            "transfer_kib": round(audits["total-byte-weight"]["numericValue"] / 1024)}


def measure() -> dict[str, Any]:
    var = Path(tempfile.mkdtemp(prefix="bench-lighthouse-"))
    stack = LocalStack(var).start()
    try:
        out: dict[str, Any] = {}
        for page in PAGES:
            runs = [_run(stack.url + page, var / "report.json") for _ in range(RUNS)]
            # The median run by performance score: one run on a shared machine can be unlucky.
            out[page] = sorted(runs, key=lambda r: r["scores"]["performance"])[RUNS // 2]
        return out
    finally:
        stack.stop()


def main() -> None:
    commit = measured_commit()
    date = dt.date.today().isoformat()
    pages = measure()
    result: dict[str, Any] = {"date": date, "commit": commit, "lighthouse": "12.2.3, mobile", "pages": pages}
    out = ROOT / "bench" / "results" / f"lighthouse-{date}-{commit}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    rows = []
    for page, r in pages.items():
        s, m = r["scores"], r["metrics"]
        rows.append(f"| `{page}` | {s['performance']} | {s['accessibility']} | {s['best-practices']} | "
                    f"{m['first-contentful-paint']:.0f} | {m['largest-contentful-paint']:.0f} | "
                    f"{m['total-blocking-time']:.0f} | {m['cumulative-layout-shift']:.3f} | {r['transfer_kib']} |")
    table = (f"# Lighthouse on the pages, {date} at {commit}\n\n"
             f"Lighthouse 12.2.3, mobile (its defaults), the median of {RUNS} runs by performance, on a local "
             "stack through nginx (bench/lighthouse.py).\n\n"
             "| page | performance | accessibility | best practices | FCP ms | LCP ms | TBT ms | CLS | KiB sent |\n"
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n")
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
