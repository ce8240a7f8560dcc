"""GET /event/{event}/scans: every scan of an event (admitted, refused with its reason, an
offline upload's conflict, annulled, exits), as the tickets processor recorded them in the
event's scan log (store/scans.py), streamed a page at a time: NDJSON by default, CSV with
`Accept: text/csv`. Memory stays flat however many scans; each row carries its cursor, and
`?after=<cursor>` resumes after it.

Must change together: ROW (the columns) and openapi.yaml's ScanRow; store/scans.py."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterable
from typing import Any

import msgspec
from aiohttp import web

from ..api_keys import Permission
from ..errors import InvalidInput, StoreError
from ..models import is_list_id
from ..store import Scan
from . import inputs
from .appkeys import SCANS, TICKETS
from .auth import event_in_path, requires
from .budget import fixed

# The scans read from Redis at a time: a page is a few hundred KB, whatever the event's size.
PAGE = 1000
ROW = ("cursor", "recorded_at", "scanned_at", "type", "reason", "ticket", "list", "direction", "offline",
       "device_id", "device_name", "actor", "change")
_CURSOR_RE = re.compile(r"[0-9]{1,15}-[0-9]{1,19}")
_encode = msgspec.json.Encoder().encode
log = logging.getLogger(__name__)


def _row(scan: Scan) -> dict[str, Any]:
    c = scan.change
    device = c.to_json()["device"]
    return {"cursor": scan.cursor, "recorded_at": scan.recorded_at, "scanned_at": c.scanned_at or c.timestamp,
            "type": c.type.value, "reason": c.reason, "ticket": c.ticket_id, "list": c.list,
            "direction": c.direction, "offline": c.offline, "device_id": device and device["id"],
            "device_name": device and device["name"], "actor": c.actor, "change": c.id}


def _time_ms(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 1e11:
        raise InvalidInput(f"{name} is a time in seconds since the epoch", slug="bad-time")
    return int(seconds * 1000)


class _Format:
    content_type = "application/x-ndjson"

    def head(self) -> bytes:
        return b""

    def rows(self, rows: Iterable[dict[str, Any]]) -> bytes:
        return b"".join(_encode(r) + b"\n" for r in rows)


class _Csv(_Format):
    content_type = "text/csv; charset=utf-8"

    def head(self) -> bytes:
        return (",".join(ROW) + "\r\n").encode()

    def rows(self, rows: Iterable[dict[str, Any]]) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out)
        for r in rows:
            writer.writerow(["" if r[k] is None else str(r[k]).lower() if isinstance(r[k], bool) else r[k]
                             for k in ROW])
        return out.getvalue().encode()


def _format(request: web.Request) -> _Format:
    accept = request.headers.get("Accept", "")
    return _Csv() if "text/csv" in accept and "x-ndjson" not in accept else _Format()


@requires(Permission.EXPORT, scope=event_in_path, cost=fixed(PAGE))
async def export_scans(request: web.Request) -> web.StreamResponse:
    inputs.reject_unknown_params(request, ("after", "list", "from", "until"))
    event_id = inputs.event_id(request.match_info["event"])
    await request.app[TICKETS].get_event(event_id)  # 404 for an event that is not
    after = request.query.get("after")
    if after is not None and not _CURSOR_RE.fullmatch(after):
        raise InvalidInput("after is a row's cursor (<ms>-<seq>)", slug="bad-cursor")
    list_id = request.query.get("list")
    if list_id is not None and not (is_list_id(list_id) and list_id.startswith(event_id)):
        raise InvalidInput("list is one of the event's lists", slug="malformed-list-id")
    since_ms, until_ms = _time_ms(request, "from"), _time_ms(request, "until")
    if after is None and since_ms is not None:
        after = f"{since_ms - 1}-18446744073709551615" if since_ms > 0 else None
    fmt = _format(request)
    response = web.StreamResponse(headers={"Content-Type": fmt.content_type, "Cache-Control": "no-store"})
    await response.prepare(request)
    await response.write(fmt.head())
    scans = request.app[SCANS]
    try:
        while True:
            page = await scans.page(event_id, after, until_ms, PAGE)
            rows = [_row(s) for s in page if list_id is None or s.change.list == list_id]
            if rows:
                await response.write(fmt.rows(rows))  # waits while the client is slower than Redis
            if len(page) < PAGE:
                break
            after = page[-1].cursor
    except Exception as exc:
        # The status went out before the first row: the body is cut short instead (no final
        # chunk, the connection closed), and the last row's cursor resumes it.
        if isinstance(exc, StoreError):
            log.warning("scan export of %s cut short after %s: %s", event_id, after, exc)
        else:
            log.exception("scan export of %s cut short after %s", event_id, after)
        if request.transport is not None:
            request.transport.abort()  # no final chunk: the client sees an unfinished body
        return response
    await response.write_eof()
    return response
