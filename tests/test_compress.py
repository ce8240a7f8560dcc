"""The committed .gz files of web/ are their sources, compressed (tooling/compress.py)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from tooling.compress import WEB, sources, stale, write


def test_every_page_file_has_its_gz_and_none_is_stale() -> None:
    assert len(sources()) >= 20
    assert stale() == [], "run `python -m tooling.compress` and commit the .gz files"


def test_a_changed_source_and_a_removed_one_are_found_and_put_right(tmp_path: Path) -> None:
    web = tmp_path / "web"
    shutil.copytree(WEB / "gate", web / "gate")
    (web / "gate" / "gate.js").write_text("// changed\n")
    (web / "gate" / "token.js").unlink()
    found = {p.name for p in stale(web)}
    assert found == {"gate.js.gz", "token.js.gz"}
    write(web)
    assert stale(web) == [] and not (web / "gate" / "token.js.gz").exists()
    assert gzip.decompress((web / "gate" / "gate.js.gz").read_bytes()) == b"// changed\n"
