"""The house's layers hold: no module imports a layer above its own, and no import cycle
(docs/architecture.md#where-things-are; `python -m tooling.imports --edges` shows any)."""

from __future__ import annotations

from tooling.imports import cycles, graph, layer, upward


def test_no_module_imports_a_layer_above_its_own() -> None:
    edges = graph()
    assert {"service.api.app", "service.processor", "service.store.tickets", "tooling.up"} <= edges.keys()
    assert upward(edges) == []


def test_the_rules_catch_an_upward_import_and_a_cycle() -> None:
    made_up = {
        "service.processor": {"service.api.appkeys"},
        "service.store.feed": {"service.api.inputs"},
        "bench.run": {"tests.conftest"},
        "service.api.appkeys": {"service.store.feed"},
        "service.store.keys": {"service.store.tickets"},
        "service.store.tickets": {"service.store.keys"},
        "tests.conftest": {"bench.run"},
    }
    assert upward(made_up) == [("bench.run", "tests.conftest"), ("service.processor", "service.api.appkeys"),
                               ("service.store.feed", "service.api.inputs")]
    assert cycles(made_up) == [["bench.run", "tests.conftest"], ["service.store.keys", "service.store.tickets"]]


def test_there_is_no_import_cycle() -> None:
    assert cycles(graph()) == []
    assert layer("service.api.handlers") == ("http", 3) and layer("service.models") == ("core", 1)
