"""The docs hold together: the README is a front door of at most 250 lines; every relative
link in README.md and docs/ names a file that exists, and a heading of it where it names
one; every citation of a docs page in code, config and tests names a page and heading that
exist; and nothing cites README sections, which live in docs/ now."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "results" / "README.md"]
# What may cite a docs page: everything tracked that is not a docs page or a result.
CITING = [p for p in ROOT.rglob("*") if p.is_file() and not {".venv", ".git", "docs", "results", "vendor",
                                                                 "var", "node_modules"} & set(p.parts)
          and (p.suffix in {".py", ".lua", ".js", ".html", ".css", ".yml", ".yaml", ".conf", ".sh", ".envsh",
                            ".template", ".toml", ".txt"} or p.name in {"Makefile", "Dockerfile"})]
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CITATION = re.compile(r"docs/([a-z0-9_-]+\.md)(#[a-z0-9_-]+)?")


def slug(heading: str) -> str:
    """A heading's anchor, as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def _target(base: Path, link: str) -> tuple[Path, str]:
    path, _, anchor = link.partition("#")
    return (base.parent / path).resolve() if path else base, anchor


def test_the_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    text = "\n".join(lines)
    assert "make up" in text and "make test" in text
    for page in sorted((ROOT / "docs").glob("*.md")):  # every page is reachable from it
        assert f"(docs/{page.name})" in text, page.name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for link in _LINK.findall(text):
        if re.match(r"^[a-z]+:", link):  # http:, mailto: and the like
            continue
        target, anchor = _target(page, link)
        assert target.exists(), f"{page.name}: {link}"
        if anchor:
            assert anchor in anchors(target), f"{page.name}: {link}"


def test_every_citation_of_a_docs_page_names_a_page_and_heading_that_exist() -> None:
    cited = 0
    for path in CITING:
        for page, anchor in _CITATION.findall(path.read_text(errors="replace")):
            target = ROOT / "docs" / page
            assert target.exists(), f"{path.relative_to(ROOT)} cites docs/{page}"
            if anchor:
                assert anchor[1:] in anchors(target), f"{path.relative_to(ROOT)} cites docs/{page}{anchor}"
            cited += 1
    assert cited >= 20  # the code does cite the docs: this test reads what it should


def test_nothing_cites_a_readme_section() -> None:
    for path in CITING:
        found = re.search(r"README[,:] *[\"A-Z]", path.read_text(errors="replace"))
        assert found is None, f"{path.relative_to(ROOT)}: {found.group(0) if found else ''}"


def test_the_bench_results_index_lists_every_result() -> None:
    results = ROOT / "bench" / "results"
    index = (results / "README.md").read_text()
    listed = set(re.findall(r"\]\(([^)/]+\.(?:md|json))\)", index))
    present = {p.name for p in results.iterdir() if p.name != "README.md"}
    assert listed == present
    assert not any(name.endswith(".txt") or name == "latest.md" for name in present)  # no raw dumps, no copies
