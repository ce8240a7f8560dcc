"""Devices enrolled at run time, in the store, on every backend: one-use enrolment codes,
keys kept as digests, rolls and revocations that move the generation replicas watch."""

from __future__ import annotations

import asyncio

import pytest

from service.api_keys import DEVICE_KEY_PREFIX, ENROLMENT_PREFIX, DeviceCredential
from service.errors import DeviceNotFound, DeviceStateRefused, EnrolmentRefused
from service.models import DeviceState, Direction, Origin
from service.store import DeviceSpec, Store, keys

GATE = DeviceSpec("North gate 1", "scanner", event="0a1b2c3d", lists=("0a1b2c3d-0001",), direction=Direction.ENTRY)


async def _enrol(store: Store, code: str) -> tuple[str, str]:
    """A device's key, made as the API makes it, and the enrolled device's id."""
    credential = DeviceCredential.parse(ENROLMENT_PREFIX, code)
    assert credential is not None
    key, key_credential = DeviceCredential.new(DEVICE_KEY_PREFIX, credential.device_id)
    device = await store.devices.enrol(code, key_credential.digest, "gate/1.0", "Pixel 7")
    return key, device.id


async def test_a_device_is_made_pending_and_enrols_once(store: Store) -> None:
    made = await store.devices.create(GATE)
    assert made.device.state is DeviceState.PENDING and made.code.startswith(ENROLMENT_PREFIX)
    assert made.expires_at > made.device.created_at + 14 * 60
    _, device_id = await _enrol(store, made.code)
    device, key_digest = await store.devices.get_with_key(device_id)
    assert device.state is DeviceState.ACTIVE and device.enrolled_at is not None
    assert (device.lists, device.direction, device.event) == (GATE.lists, Direction.ENTRY, GATE.event)
    assert (device.software, device.hardware) == ("gate/1.0", "Pixel 7") and len(key_digest) == 64
    with pytest.raises(EnrolmentRefused):
        await _enrol(store, made.code)  # spent


async def test_of_twenty_enrolments_at_once_exactly_one_wins(store: Store) -> None:
    made = await store.devices.create(GATE)
    results = await asyncio.gather(*(_enrol(store, made.code) for _ in range(20)), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, EnrolmentRefused) for r in results if isinstance(r, BaseException))


async def test_an_unknown_forged_or_late_code_is_refused_alike(store: Store) -> None:
    made = await store.devices.create(GATE)
    forged = made.code[:-4] + ("AAAA" if not made.code.endswith("AAAA") else "BBBB")
    for code in (forged, "tke_0123456789abcdef." + "A" * 43, "nonsense"):
        with pytest.raises(EnrolmentRefused):
            await _enrol(store, code) if code != "nonsense" else await store.devices.enrol(code, "d", "", "")
    store.devices.enrolment_ttl_s = 0
    late = await store.devices.create(GATE)
    await asyncio.sleep(0.01)  # the code's window is 0 µs long: any later moment is past it
    with pytest.raises(EnrolmentRefused):
        await _enrol(store, late.code)


async def test_only_digests_are_stored(store: Store) -> None:
    made = await store.devices.create(GATE)
    key, device_id = await _enrol(store, made.code)
    stored = await store.redis.hgetall(keys.device(device_id))
    assert not any(made.code in v or key in v or key.split(".")[1] in v for v in stored.values())


async def test_a_roll_and_a_revocation_move_the_generation_and_change_the_key(store: Store) -> None:
    made = await store.devices.create(GATE)
    _, device_id = await _enrol(store, made.code)
    before = await store.devices.generation()
    _, old_digest = await store.devices.get_with_key(device_id)
    await store.devices.roll(device_id, "f" * 64)
    assert (await store.devices.get_with_key(device_id))[1] == "f" * 64 != old_digest
    assert await store.devices.generation() == before + 1
    await store.devices.revoke(device_id)
    device, digest = await store.devices.get_with_key(device_id)
    assert device.state is DeviceState.REVOKED and digest == "" and await store.devices.generation() == before + 2
    for change in (store.devices.revoke(device_id), store.devices.roll(device_id, "e" * 64)):
        with pytest.raises(DeviceStateRefused):
            await change
    with pytest.raises(DeviceNotFound):
        await store.devices.revoke("0123456789abcdef")
    pending = await store.devices.create(GATE)
    with pytest.raises(DeviceStateRefused):
        await store.devices.roll(pending.device.id, "e" * 64)


async def test_the_same_forwarded_request_gets_the_same_device_with_a_new_code(store: Store) -> None:
    origin = Origin(actor="ops", request_id="r-1", client_ip="10.0.0.1", forwarded=True)
    first = await store.devices.create(GATE, origin)
    again = await store.devices.create(GATE, origin)
    assert again.device.id == first.device.id and again.code != first.code
    with pytest.raises(EnrolmentRefused):
        await _enrol(store, first.code)  # the first code was replaced
    await _enrol(store, again.code)
    other = await store.devices.create(GATE, Origin(actor="ops", request_id="r-2", client_ip="10.0.0.1",
                                                    forwarded=True))
    assert other.device.id != first.device.id
    assert [d.id for d in await store.devices.all()] == [first.device.id, other.device.id]
