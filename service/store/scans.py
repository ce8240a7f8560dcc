"""Every scan of an event, as the tickets processor recorded it (process.lua adds each new
scan change of an event's lists to `scans:{s}:<event id>`): read in pages for the export.

Must change together: process.lua (the entry's fields: a change entry's, in name order, and
`c`, its change id), api/export.py (what a row shows).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import Change
from . import keys
from .entries import change_of
from .link import Link


@dataclass(frozen=True, slots=True)
class Scan:
    """A scan as the log keeps it: its change, and when the processor recorded it."""

    cursor: str  # its id in the log, "<ms>-<seq>": the export resumes after it
    change: Change

    @property
    def recorded_at(self) -> float:
        return int(self.cursor.split("-", 1)[0]) / 1000


def _change(flat: list[str] | dict[str, str]) -> Change:
    """A log entry's change: its fields as XRANGE gives them (a flat list from a raw command)."""
    fields = flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))
    return change_of(fields["c"], fields)


class ScanLog:
    def __init__(self, link: Link) -> None:
        self._link = link

    async def page(self, event_id: str, after: str | None, until_ms: int | None, limit: int) -> list[Scan]:
        """Up to `limit` scans recorded after cursor `after` (from the first if None) and by
        `until_ms` (to the last if None), in the order they were recorded."""
        key = keys.scan_log(event_id)
        start = f"({after}" if after else "-"
        end = f"{until_ms}" if until_ms is not None else "+"
        entries = await self._link.command("scan_log", key, ("XRANGE", key, start, end, "COUNT", limit))
        return [Scan(entry_id, _change(flat)) for entry_id, flat in entries]

    async def count(self, event_id: str) -> int:
        key = keys.scan_log(event_id)
        return int(await self._link.command("scan_log_length", key, ("XLEN", key)))
