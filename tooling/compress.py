"""The static pages' files, pre-compressed: a `.gz` beside each text and WebAssembly file in
web/, which nginx sends as it is to a browser that takes gzip (`gzip_static`), at no CPU per
request. The zxing reader's 1.09 MB of WebAssembly goes over a venue's mobile network as 0.46 MB.

    python -m tooling.compress          # write the .gz files that are missing or stale
    python -m tooling.compress --check  # list them, and fail, without writing

Deterministic (no name, no time in the header), so the committed files can be checked: a test
fails when one no longer matches its source (docs/pages.md#serving-the-pages). Brotli would
save a tenth more, but the official nginx image that compose and Kubernetes run has no brotli
module, so every deployment serves the same gzip files.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
COMPRESSIBLE = {".js", ".css", ".html", ".svg", ".json", ".wasm", ".txt"}


def sources(web: Path = WEB) -> list[Path]:
    return sorted(p for p in web.rglob("*") if p.is_file() and p.suffix in COMPRESSIBLE)


def compressed(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def stale(web: Path = WEB) -> list[Path]:
    """The .gz files that are missing, out of date, or left over from a file that is gone."""
    out = []
    for source in sources(web):
        target = source.with_name(source.name + ".gz")
        if not target.exists() or gzip.decompress(target.read_bytes()) != source.read_bytes():
            out.append(target)
    out += [gz for gz in web.rglob("*.gz") if not gz.with_suffix("").exists()]
    return sorted(out)


def write(web: Path = WEB) -> list[Path]:
    written = []
    for target in stale(web):
        source = target.with_suffix("")
        if source.exists():
            target.write_bytes(compressed(source.read_bytes()))
        else:
            target.unlink()
        written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description="pre-compress web/ for nginx's gzip_static")
    parser.add_argument("--check", action="store_true", help="list stale files and fail, write nothing")
    args = parser.parse_args()
    found = stale() if args.check else write()
    for path in found:
        print(path.relative_to(ROOT))
    if args.check and found:
        sys.exit(1)


if __name__ == "__main__":
    main()
