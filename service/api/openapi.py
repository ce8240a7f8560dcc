"""The OpenAPI document served at /openapi.json: `openapi.yaml` beside this module, read once.

Adding a route means one edit there, beside its line in handlers.py; tests/test_openapi.py
checks that the two agree and that every answer the tests receive validates against it.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml

# What nginx, in front of every replica, or the HTTP layer may answer on any operation.
GATEWAY_RESPONSES = {
    "400": "BadRequest", "413": "BodyTooLarge", "414": "UriTooLong", "415": "EncodedBody",
    "429": "TooManyRequests", "431": "HeaderTooLarge", "500": "Defect", "502": "NoReplica",
    "504": "ReplicaTimeout",
}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every (method, path, operation) of a document."""
    return [(method, path, op) for path, item in document["paths"].items()
            for method, op in item.items() if method in METHODS]


@functools.cache
def _source() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("openapi.yaml").read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def build_openapi() -> dict[str, Any]:
    """The document as served: the YAML, each operation given the answers any may get."""
    document = copy.deepcopy(_source())
    for _, _, op in operations(document):
        answers = op["responses"]
        for status, name in GATEWAY_RESPONSES.items():
            answers.setdefault(status, _ref(name))
        if "503" in answers:  # it reaches Redis
            answers.setdefault("507", _ref("OutOfMemory"))
    return document
