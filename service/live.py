"""The live view of an event, as a supervisor watches it during doors: per list (a gate or an
area) inside against capacity, its totals and refusals by reason, entries, exits and refusals
per minute over the last hour; the event's issued and admitted; its devices, last seen and
whether they are offline.

A picture is built by each replica from the store (the lists' own counters, the event's scan
log, the devices) and sent to every viewer of the replica (api/live.py): the first message
is the whole picture, each later one the parts that changed, every value absolute, so that
updates merge in any number and a viewer that missed some is made whole by the parts changed
since. A message's id is the scan log position the picture has counted up to.

Must change together: the message's shape here, openapi.yaml's LiveMessage and web/live/live.js.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .models import ChangeType, Device, DeviceState, Direction, EventInfo, ListInfo, device_of

# The window of the per-minute figures.
MINUTES = 60


def minute_of(seconds: float) -> int:
    """A minute's number: whole minutes since the epoch."""
    return int(seconds // 60)


def position_ms(position: str) -> int | None:
    """The time (ms) of a scan log position `<ms>-<seq>`; None for none or a malformed one."""
    ms, sep, seq = position.partition("-")
    if not (sep and ms.isdigit() and seq.isdigit() and len(ms) <= 15 and len(seq) <= 19):
        return None
    return int(ms)


@dataclass(frozen=True, slots=True)
class ScanTick:
    """What the live view counts of one scan: its list, kind, and when it was recorded."""

    position: str
    list_id: str
    type: ChangeType
    direction: str | None
    recorded_at: float
    device_id: str | None


@dataclass
class Picture:
    """One event's live picture, on one replica."""

    event_id: str
    offline_after_s: int
    event: dict[str, Any] = field(default_factory=dict)
    lists: dict[str, dict[str, Any]] = field(default_factory=dict)
    # list id -> minute -> [entries, exits, refused]
    minutes: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Devices that scanned at the event's lists in the window, beside those bound to it.
    scanning_devices: set[str] = field(default_factory=set)
    position: str = "0-0"

    def count(self, scans: Iterable[ScanTick]) -> dict[str, dict[int, list[int]]]:
        """Add scans to the per-minute figures; the buckets they touched (absolute)."""
        touched: dict[str, dict[int, list[int]]] = {}
        for s in scans:
            if s.device_id:
                self.scanning_devices.add(s.device_id)
            slot = {ChangeType.CHECKIN: 1 if s.direction == Direction.EXIT else 0,
                    ChangeType.CHECKIN_REFUSED: 2}.get(s.type)
            if slot is None:
                continue
            minute = minute_of(s.recorded_at)
            bucket = self.minutes.setdefault(s.list_id, {}).setdefault(minute, [0, 0, 0])
            bucket[slot] += 1
            touched.setdefault(s.list_id, {})[minute] = bucket
        return touched

    def prune(self, now_s: float) -> None:
        first = minute_of(now_s) - MINUTES + 1
        for per_minute in self.minutes.values():
            for minute in [m for m in per_minute if m < first]:
                del per_minute[minute]

    def set_figures(self, event: EventInfo, lists: Iterable[ListInfo]) -> dict[str, Any]:
        """The event's and lists' counters as the store has them now; the parts that changed."""
        changed: dict[str, Any] = {}
        figures = {li.id: _list_json(li) for li in lists}
        event_json = {"id": event.id, "name": event.name, "capacity": event.capacity, "issued": event.issued,
                      "admitted": sum(li["admitted"] for li in figures.values()),
                      "inside": sum(li["inside"] for li in figures.values())}
        if event_json != self.event:
            self.event = changed["event"] = event_json
        moved = {lid: li for lid, li in figures.items() if self.lists.get(lid) != li}
        if moved:
            changed["lists"] = moved
        self.lists = figures
        return changed

    def set_devices(self, devices: Iterable[Device], now_s: float) -> dict[str, Any]:
        """The event's devices (bound to it, or scanning at it) as the store has them now;
        those whose figures changed. A device is offline when not seen for offline_after_s."""
        found = {d.id: self._device_json(d, now_s) for d in devices
                 if d.state is DeviceState.ACTIVE and (d.event == self.event_id or d.id in self.scanning_devices)}
        moved = {did: d for did, d in found.items() if self.devices.get(did) != d}
        gone = {did: None for did in self.devices if did not in found}
        self.devices = found
        return {"devices": {**moved, **gone}} if moved or gone else {}

    def _device_json(self, d: Device, now_s: float) -> dict[str, Any]:
        return {"id": d.id, "name": d.name, "lists": list(d.lists), "last_seen": d.last_seen,
                "offline": d.last_seen is None or now_s - d.last_seen > self.offline_after_s}

    def snapshot(self, now_s: float) -> dict[str, Any]:
        self.prune(now_s)
        return {"type": "snapshot", "at": now_s, "minutes_kept": MINUTES, "offline_after_s": self.offline_after_s,
                "event": self.event, "lists": self.lists, "minutes": _minutes_json(self.minutes),
                "devices": self.devices}

    def since(self, position: str, now_s: float) -> dict[str, Any] | None:
        """What a viewer that had the picture up to `position` lacks: every counter and device
        (few), and the minutes from that position's on. None when the position is no longer
        in the window (or is not one): then it needs the snapshot."""
        ms = position_ms(position)
        if ms is None or minute_of(ms / 1000) < minute_of(now_s) - MINUTES + 1 or ms / 1000 > now_s + 60:
            return None
        first = minute_of(ms / 1000)
        minutes = {lid: {m: b for m, b in per.items() if m >= first} for lid, per in self.minutes.items()}
        return {"type": "update", "at": now_s, "event": self.event, "lists": self.lists,
                "minutes": _minutes_json(minutes), "devices": self.devices}


def update_message(parts: Mapping[str, Any], now_s: float | None = None) -> dict[str, Any]:
    return {"type": "update", "at": time.time() if now_s is None else now_s, **parts}


def merge(into: dict[str, Any], parts: Mapping[str, Any]) -> None:
    """Fold an update's parts into another's, as a viewer that received both would: the
    later value of each counter, bucket and device wins."""
    for name, value in parts.items():
        if name in ("lists", "devices"):
            into.setdefault(name, {}).update(value)
        elif name == "minutes":
            for list_id, per_minute in value.items():
                into.setdefault("minutes", {}).setdefault(list_id, {}).update(per_minute)
        else:
            into[name] = value


def _minutes_json(minutes: Mapping[str, Mapping[int, list[int]]]) -> dict[str, dict[str, list[int]]]:
    return {lid: {str(m): list(b) for m, b in per.items()} for lid, per in minutes.items() if per}


def _list_json(li: ListInfo) -> dict[str, Any]:
    return {"id": li.id, "name": li.spec.name, "capacity": li.spec.capacity, "reentry": li.spec.reentry,
            "inside": li.inside, "admitted": li.admitted, "exits": li.exits,
            "refused": {k: v for k, v in sorted((li.refused or {}).items()) if v}, "conflicts": li.conflicts}


def tick_of(position: str, fields_list: str | None, kind: str, direction: str | None, recorded_at: float,
            actor: str) -> ScanTick:
    device = device_of(actor)
    return ScanTick(position, fields_list or "", ChangeType(kind), direction, recorded_at,
                    None if device is None else device[0])
