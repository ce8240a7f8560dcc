"""Devices enrolled at run time: made by an admin, enrolled once with a one-use code, their
key rolled or the device revoked for good. Every device lives in one slot ({devices}) with
the generation that every roll and revocation moves on, which replicas watch to drop their
cached devices (api/device_cache.py).

Must change together: device.lua, enrol.lua, device_state.lua (the hash's fields, the states),
adaptors.py (their KEYS and ARGV), models.Device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..api_keys import ENROLMENT_PREFIX, DeviceCredential, new_device_id
from ..errors import DeviceNotFound, DeviceStateRefused, EnrolmentRefused
from ..models import Device, DeviceState, Direction, Origin
from . import keys
from .adaptors import (
    DeviceArgv,
    DeviceKeys,
    DeviceStateArgv,
    DeviceStateKeys,
    EnrolArgv,
    EnrolKeys,
    SeenArgv,
    SeenKeys,
)
from .link import Link

# The device hash's fields a Device is made of, in order.
_FIELDS = ("n", "ro", "ev", "ls", "dir", "st", "c", "e", "seen", "sw", "hw", "kd")


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    name: str
    role: str
    event: str | None = None
    lists: tuple[str, ...] = ()
    direction: Direction | None = None


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A new device's one-use code (shown once), and until when it works."""

    device: Device
    code: str
    expires_at: float


def _s(value: str | None) -> float | None:
    return int(value) / 1e6 if value else None


def _device(device_id: str, values: Sequence[str | None]) -> tuple[Device, str]:
    """A device from its hash's _FIELDS, and its key's digest ('' for none)."""
    name, role, event, lists, direction, state, created, enrolled, seen, sw, hw, key_digest = values
    device = Device(
        device_id, name or "", role or "", event or None, tuple(lists.split(",")) if lists else (),
        Direction(direction) if direction else None, DeviceState(state) if state else DeviceState.REVOKED,
        int(created or 0) / 1e6,
        _s(enrolled), _s(seen), sw or None, hw or None)
    return device, key_digest or ""


class DeviceStore:
    def __init__(self, link: Link, enrolment_ttl_s: int) -> None:
        self._link = link
        self.enrolment_ttl_s = enrolment_ttl_s

    async def create(self, spec: DeviceSpec, origin: Origin = Origin()) -> Enrolment:
        """A pending device and its enrolment code. Through nginx its id derives from the
        caller and request id: the same request again gets the same device, with a new code
        (the first answer's code, lost with it, can never be shown again)."""
        mark, device_id = "", new_device_id()
        if origin.forwarded:
            mark = keys.digest(origin.actor, origin.replay_id)[:16]
            device_id = keys.digest("device", origin.actor, origin.replay_id)[:16]
        code, credential = DeviceCredential.new(ENROLMENT_PREFIX, device_id)
        script_keys = DeviceKeys(keys.device(device_id), keys.device_index())
        argv = DeviceArgv(device_id, spec.name, spec.role, spec.event or "", ",".join(spec.lists),
                          spec.direction.value if spec.direction else "", credential.digest,
                          self.enrolment_ttl_s * 1_000_000, mark)
        outcome, *times = await self._link.run("device_create", self._link.scripts.device, script_keys.flat(),
                                               argv.flat(), write=True)
        if outcome == "taken":  # another device's id: draw a random one
            return await self.create(spec)
        created_us, until_us = (int(t) for t in times)
        device = Device(device_id, spec.name, spec.role, spec.event, spec.lists, spec.direction,
                        DeviceState.PENDING, created_us / 1e6)
        return Enrolment(device, code, until_us / 1e6)

    async def enrol(self, code: str, key_digest: str, software: str, hardware: str) -> Device:
        """Turn the code's device active with the key whose digest this is; the code is spent.
        EnrolmentRefused for a code that is unknown, spent or late, alike."""
        credential = DeviceCredential.parse(ENROLMENT_PREFIX, code)
        if credential is None:
            raise EnrolmentRefused()
        script_keys = EnrolKeys(keys.device(credential.device_id))
        argv = EnrolArgv(credential.digest, key_digest, software, hardware)
        outcome, *_ = await self._link.run("device_enrol", self._link.scripts.enrol, script_keys.flat(),
                                           argv.flat(), write=True)
        if outcome != "enrolled":
            raise EnrolmentRefused()
        device, _ = await self.get_with_key(credential.device_id)
        return device

    async def roll(self, device_id: str, key_digest: str) -> None:
        await self._change_state(device_id, "roll", key_digest)

    async def revoke(self, device_id: str) -> None:
        await self._change_state(device_id, "revoke", "")

    async def _change_state(self, device_id: str, action: str, key_digest: str) -> None:
        script_keys = DeviceStateKeys(keys.device(device_id), keys.device_generation())
        outcome, *_ = await self._link.run(f"device_{action}", self._link.scripts.device_state, script_keys.flat(),
                                           DeviceStateArgv(action, key_digest).flat(), write=True)
        if outcome == "missing":
            raise DeviceNotFound(device_id)
        if outcome == "revoked_already":
            raise DeviceStateRefused(device_id, "it is revoked")
        if outcome == "pending":
            raise DeviceStateRefused(device_id, "it has not enrolled yet: it has no key to roll")

    async def get_with_key(self, device_id: str) -> tuple[Device, str]:
        """The device and its key's digest; DeviceNotFound if there is none."""
        key = keys.device(device_id)
        values = await self._link.command("device_get", key, ("HMGET", key, *_FIELDS))
        if values[5] is None:
            raise DeviceNotFound(device_id)
        return _device(device_id, values)

    async def get(self, device_id: str) -> Device:
        return (await self.get_with_key(device_id))[0]

    async def all(self) -> list[Device]:
        """Every device, oldest first: an admin's list (a venue has tens, not thousands)."""
        index = keys.device_index()
        ids = await self._link.command("device_index", index, ("SMEMBERS", index))
        batch = self._link.batch()
        for device_id in ids:
            batch.cmd.hmget(keys.device(device_id), list(_FIELDS))
        found = await batch.run(self._link.call("device_read")) if ids else []
        devices = [_device(i, v)[0] for i, v in zip(ids, found, strict=True) if v[5] is not None]
        return sorted(devices, key=lambda d: (d.created_at, d.id))

    async def seen(self, last_seen: dict[str, float]) -> None:
        """When devices were last seen (device id: seconds): each moves forward only. Not
        waited for by replicas: a last_seen a failover loses comes back with the next flush."""
        if not last_seen:
            return
        ids = sorted(last_seen)
        script_keys = SeenKeys(tuple(keys.device(i) for i in ids))
        argv = SeenArgv(tuple(round(last_seen[i] * 1e6) for i in ids))
        await self._link.run("device_seen", self._link.scripts.seen, script_keys.flat(), argv.flat())

    async def scan_counts(self) -> dict[str, dict[str, int]]:
        """Each device's scans by type, as the tickets processor counted them (devscans:{s},
        process.lua): one read of every shard, one round trip per node."""
        batch = self._link.batch()
        for shard in keys.SHARDS:
            batch.cmd.hgetall(keys.device_scans(shard))
        counts: dict[str, dict[str, int]] = {}
        for found in await batch.run(self._link.call("device_scans")):
            for name, n in found.items():
                device_id, _, kind = name.partition(":")
                by_kind = counts.setdefault(device_id, {})
                by_kind[kind] = by_kind.get(kind, 0) + int(n)
        return counts

    async def generation(self) -> int:
        """Moved on at every roll and revocation (device_state.lua)."""
        key = keys.device_generation()
        return int(await self._link.command("device_generation", key, ("GET", key)) or 0)
