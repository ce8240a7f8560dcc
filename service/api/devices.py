"""The device routes: an admin makes a device and gets its one-use enrolment code; the device
enrols with it and gets its key, shown once; an admin lists, rolls and revokes devices.
Authentication by a device's key is auth.py's, through the worker's cache (device_cache.py)."""

from __future__ import annotations

import io
import re
from typing import Any

import msgspec
from aiohttp import web

from ..api_keys import DEVICE_KEY_PREFIX, ENROLMENT_PREFIX, DeviceCredential, Permission, is_device_id
from ..errors import EnrolmentRefused, InvalidInput
from ..models import Direction
from ..store import DeviceSpec
from . import inputs
from .answers import json_answer
from .appkeys import DEVICES
from .auth import all_events, requires
from .bodies import DeviceBody, EnrolBody
from .tokens import QR_BORDER, qr_of

_DEVICE_BODY = msgspec.json.Decoder(DeviceBody)
_ENROL_BODY = msgspec.json.Decoder(EnrolBody)
# A key or a code is in the answer: no cache, no proxy, no browser may keep it.
_SECRET_HEADERS = {"Cache-Control": "no-store"}
_HOST_RE = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_ORIGIN_RE = re.compile(r"https?://(" + _HOST_RE.pattern + ")")


def _origin(request: web.Request) -> str:
    """Where the caller reached the service: a browser's Origin (the office page's), else the
    Host the client gave nginx (X-Forwarded-Host, port included), else the replica's own."""
    origin = request.headers.get("Origin", "")
    if _ORIGIN_RE.fullmatch(origin):
        return origin
    host = request.headers.get("X-Forwarded-Host", "")
    return f"{request.scheme}://{host if _HOST_RE.fullmatch(host) else request.host}"


def _device_id(request: web.Request) -> str:
    raw = request.match_info["id"]
    if not is_device_id(raw):
        raise InvalidInput("the device id is not one (16 hex digits)", slug="malformed-device-id")
    return raw


@requires(Permission.MANAGE_DEVICES, scope=all_events)
async def create_device(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    body, canonical = await inputs.decode_body(request, _DEVICE_BODY)
    spec = DeviceSpec(body.name, body.role, body.event, tuple(body.lists or ()),
                      Direction(body.direction) if body.direction else None)
    made = await request.app[DEVICES].create(spec, origin=inputs.origin(request, "device\n" + canonical))
    # The gate page enrols from this link, or from the QR code of it that a phone's camera or
    # the gate's own reads (docs/pages.md).
    url = f"{_origin(request)}/gate/#enrol={made.code}"
    qr = io.BytesIO()
    qr_of(url).save(qr, kind="svg", scale=1, border=QR_BORDER, xmldecl=False, unit="mm",
                    title=f"Enrol {made.device.name}", svgclass="enrolment-qr")
    answer = {**made.device.to_json(), "enrolment": {
        "token": made.code, "url": url, "expires_at": made.expires_at, "qr_svg": qr.getvalue().decode()}}
    return json_answer(answer, status=201, headers={**_SECRET_HEADERS, "Location": f"/device/{made.device.id}"})


async def enrol_device(request: web.Request) -> web.Response:
    """No key: the enrolment code is the credential, once (nginx holds each address to a few
    tries a minute)."""
    inputs.reject_unknown_params(request, ())
    body, _ = await inputs.decode_body(request, _ENROL_BODY)
    code = DeviceCredential.parse(ENROLMENT_PREFIX, body.token)
    if code is None:
        raise EnrolmentRefused()
    key, credential = DeviceCredential.new(DEVICE_KEY_PREFIX, code.device_id)
    device = await request.app[DEVICES].enrol(body.token, credential.digest, body.software or "",
                                              body.hardware or "")
    return json_answer({"device": device.to_json(), "key": key}, status=201, headers=_SECRET_HEADERS)


@requires(Permission.READ_DEVICES, scope=all_events)
async def list_devices(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    devices = request.app[DEVICES]
    scans = await devices.scan_counts()
    return json_answer([{**d.to_json(), "scans": scans.get(d.id, {})} for d in await devices.all()])


@requires(Permission.READ_DEVICES, scope=all_events)
async def get_device(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    devices = request.app[DEVICES]
    device = await devices.get(_device_id(request))
    scans = await devices.scan_counts()
    return json_answer({**device.to_json(), "scans": scans.get(device.id, {})})


@requires(Permission.MANAGE_DEVICES, scope=all_events)
async def roll_device(request: web.Request) -> web.Response:
    """A new key for the device, shown once; its old key is refused from now on."""
    inputs.reject_unknown_params(request, ())
    device_id = _device_id(request)
    key, credential = DeviceCredential.new(DEVICE_KEY_PREFIX, device_id)
    devices = request.app[DEVICES]
    await devices.roll(device_id, credential.digest)
    return json_answer({"device": (await devices.get(device_id)).to_json(), "key": key}, headers=_SECRET_HEADERS)


@requires(Permission.MANAGE_DEVICES, scope=all_events)
async def revoke_device(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    device_id = _device_id(request)
    devices = request.app[DEVICES]
    await devices.revoke(device_id)
    return json_answer((await devices.get(device_id)).to_json())


def setup_device_routes(r: Any) -> None:
    r.add_post("/device", create_device)
    r.add_get("/device", list_devices)
    r.add_post("/device/enrol", enrol_device)
    r.add_get(r"/device/{id:(?!enrol$)[^/]+}", get_device)
    r.add_post("/device/{id}/roll", roll_device)
    r.add_post("/device/{id}/revoke", revoke_device)
