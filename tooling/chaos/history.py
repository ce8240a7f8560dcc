"""The record of a run: every operation with its invocation, its answer and its times."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    OK = "ok"  # acknowledged: it happened, and must be found
    FAIL = "fail"  # refused with a client error (a 4xx): it did not happen
    UNKNOWN = "unknown"  # a 5xx, a timeout or no answer: it may or may not have happened


class Kind(StrEnum):
    CREATE = "create"
    BATCH = "batch"
    ENTRY = "entry"
    EXIT = "exit"
    ANNUL = "annul"
    REVOKE = "revoke"


@dataclass
class Op:
    index: int
    worker: int
    kind: Kind
    request_id: str
    ticket: str | None = None  # the ticket scanned, annulled or revoked
    list_name: str | None = None  # the list's name in the workload (gate, hall, area)
    invoked_s: float = 0.0  # seconds since the run began
    completed_s: float = 0.0
    outcome: Outcome = Outcome.UNKNOWN
    status: int = 0  # the HTTP status, 0 for none
    answer: dict[str, Any] = field(default_factory=dict)  # what the client was told (trimmed)
    made: list[str] = field(default_factory=list)  # the tickets a create or a batch made

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, [], {})}

    def describe(self) -> str:
        what = f"{self.kind} {self.ticket or ''} {self.list_name or ''}".strip()
        return (f"#{self.index} {what} [{self.request_id}] {self.outcome} {self.status} "
                f"at {self.invoked_s:.2f}-{self.completed_s:.2f} s")
