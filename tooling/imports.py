"""The project's import graph: its layers, the imports that go up a layer, and its cycles.

    python -m tooling.imports            # the summary
    python -m tooling.imports --edges    # and every import that breaks a rule

Each module gets the layer of the first rule its dotted name matches. A module may import its
own layer and any lower one; an import of a higher layer, or of a sibling that the rules keep
apart (the processor and the HTTP layer), is "upward". Cycles are strongly connected components
of module-level imports, counted over every module (function-level imports included, because
they still tie two modules together).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("service", "tooling", "bench", "tests", "deploy")

# (layer, rank, prefixes): lower rank is lower in the house.
LAYERS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("lua", 0, ("service.lua",)),
    ("store", 2, ("service.store",)),
    ("processor", 3, ("service.processor", "service.deliverer")),
    ("http", 3, ("service.api",)),
    ("core", 1, ("service",)),
    ("tooling", 4, ("tooling", "deploy")),
    ("bench", 5, ("bench",)),
    ("tests", 6, ("tests",)),
)
# Same rank, and still neither may import the other.
APART = {frozenset({"processor", "http"})}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join(parts)] = Module(".".join(parts), path, is_package)
    return found


def layer(name: str) -> tuple[str, int]:
    for label, rank, prefixes in LAYERS:
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return label, rank
    raise ValueError(name)


def _targets(module: Module, known: dict[str, Module]) -> Iterator[str]:
    base = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    for node in ast.walk(ast.parse(module.path.read_text(), str(module.path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            root = node.module or ""
            if node.level:
                root = ".".join(base[: len(base) - node.level + 1] + ([root] if root else []))
            # `from . import x` names a submodule when there is one.
            names = [f"{root}.{a.name}" if f"{root}.{a.name}" in known else root for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module.name:
                yield name


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(_targets(m, known)) for name, m in known.items()}


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    bad = []
    for source, targets in edges.items():
        s_label, s_rank = layer(source)
        for target in targets:
            t_label, t_rank = layer(target)
            if t_rank > s_rank or (s_label != t_label and frozenset({s_label, t_label}) in APART):
                bad.append((source, target))
    return sorted(bad)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every upward import")
    args = parser.parse_args()
    edges = graph()
    counts: dict[str, int] = {}
    for name in edges:
        counts[layer(name)[0]] = counts.get(layer(name)[0], 0) + 1
    bad = upward(edges)
    loops = cycles(edges)
    print("modules", len(edges), "imports", sum(map(len, edges.values())))
    print("layers", " ".join(f"{label}={counts.get(label, 0)}" for label, _, _ in LAYERS))
    print("upward imports", len(bad))
    print("cycles", len(loops), " ".join("(" + " ".join(c) + ")" for c in loops))
    if args.edges:
        for source, target in bad:
            print(f"  {source} -> {target}  ({layer(source)[0]} -> {layer(target)[0]})")


if __name__ == "__main__":
    main()
