"""The bench's baseline: bare aiohttp handlers, each making the same single Redis call as the
service (the same Lua scripts with the same keys), and nothing else: no auth, no validation,
no metrics, no problem details. The service's figures are read as a ratio to these.

    gunicorn -c deploy/gunicorn.conf.py 'bench.baseline:create_app()'
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from importlib import resources

from aiohttp import web
from redis.commands.core import AsyncScript

from service.settings import Settings
from service.store import keys as Keys
from service.store.client import redis_from_settings
from service.store.link import Client

REDIS: web.AppKey[Client] = web.AppKey("redis")
SCRIPTS = web.AppKey("scripts", dict[str, AsyncScript])


def _json(data: object, status: int = 200) -> web.Response:
    # Compact, as the service's JSON is: the same bytes on the wire.
    return web.Response(body=json.dumps(data, separators=(",", ":")).encode(), status=status,
                        content_type="application/json")


_NO_FIELDS: list[str | int] = ["", 0, 0, 0, "ty", "", "h", "", "st", "", "vf", "", "vu", ""]


def _ticket(tid: str, ts: str, valid: str) -> dict[str, object]:
    # The service's ticket JSON, field for field, so that both sides send as many bytes.
    return {"id": tid, "timestamp": int(ts) / 1e6, "valid": valid == "1", "event": "default", "type": None,
            "holder": None, "seat": None, "valid_from": None, "valid_until": None,
            "status": "valid" if valid == "1" else "used"}


async def create(request: web.Request) -> web.Response:
    tid = str(uuid.uuid4())
    s = Keys.shard_of(tid)
    keys = [Keys.ticket(tid), Keys.index(s), Keys.stats(s), Keys.stream(s)]
    script = request.app[SCRIPTS]["create"]
    _, tid, _, ts, valid, *_ = await script(keys=keys, args=[tid, "bench", "", "", 100_000, *_NO_FIELDS])
    return _json(_ticket(tid, ts, valid), 201)


async def get(request: web.Request) -> web.Response:
    tid = request.match_info["id"]
    ts, valid, *_ = await request.app[REDIS].hmget(Keys.ticket(tid), ["ts", "valid", "ty", "h", "st", "vf", "vu"])
    return _json(_ticket(tid, str(ts), str(valid)))


async def invalidate(request: web.Request) -> web.Response:
    tid = request.match_info["id"]
    s = Keys.shard_of(tid)
    keys = [Keys.ticket(tid), Keys.replay(tid, "bench", uuid.uuid4().hex), Keys.stats(s), Keys.stream(s)]
    args: list[str | int] = ["0", 60, "invalidate", "bench", "", "", 100_000, tid, ""]
    outcome, _, ts, valid, *_ = await request.app[SCRIPTS]["transition"](keys=keys, args=args)
    return _json(_ticket(tid, ts, valid), 200 if outcome == "ok" else 409)


async def checkin(request: web.Request) -> web.Response:
    """The service's one call for a scan: checkin.lua, the same keys (no leaves)."""
    body = json.loads(await request.read())
    tid, list_id = body["ticket"], body["list"]
    s = Keys.shard_of(list_id)
    keys = [Keys.check_in_list(list_id), Keys.event(list_id[:8]), Keys.stats(s), Keys.stream(s),
            Keys.replay(tid, "bench", uuid.uuid4().hex, s), Keys.ticket(tid)]
    args: list[str | int] = [list_id, "entry", "", "bench", "", "", 100_000, tid, 60, "", ""]
    admitted, reason, inside, used_at, used_list, ts, valid, ty, h, st, vf, vu = \
        await request.app[SCRIPTS]["checkin"](keys=keys, args=args)
    # The service's answer, field for field (as _ticket is for the other handlers), so that
    # both sides send as many bytes: nginx's and the kernel's share grows with them.
    ticket = {"id": tid, "timestamp": int(ts) / 1e6, "valid": valid == "1", "event": tid[:8], "type": ty or None,
              "holder": h or None, "seat": st or None, "valid_from": int(vf) / 1e6 if vf else None,
              "valid_until": int(vu) / 1e6 if vu else None, "status": "valid" if valid == "1" else "used"}
    return _json({"admitted": admitted == 1, "reason": reason or None, "message": "Admitted." if admitted else reason,
                  "ticket": ticket, "list": list_id, "direction": "entry", "inside": int(inside),
                  "used_at": int(used_at) / 1e6 if used_at else None, "used_list": used_list or None,
                  "conflict": False})


async def list_page(request: web.Request) -> web.Response:
    # The service's two calls for a page: find the ids, then read them through KEYS.
    args: list[str | int] = [0, "", 100, 4, 128]
    _, _, *ids = await request.app[SCRIPTS]["scan"](keys=[Keys.index(Keys.SHARDS[0])], args=args)
    flat = await request.app[SCRIPTS]["read_many"](keys=[Keys.ticket(i) for i in ids], args=[])
    return _json([_ticket(tid, flat[7 * n], flat[7 * n + 1]) for n, tid in enumerate(ids)])


async def _redis(app: web.Application) -> AsyncIterator[None]:
    # The service's own factory: the same topology (REDIS_URL, REDIS_SENTINELS or
    # REDIS_CLUSTER_NODES), the same client class and settings.
    client = redis_from_settings(Settings.from_env(), client_name="bench-baseline")
    app[REDIS] = client
    lua = resources.files("service.lua")
    app[SCRIPTS] = {
        name: client.register_script(lua.joinpath(f"{name}.lua").read_text())
        for name in ("create", "transition", "scan", "read_many", "checkin")
    }
    yield
    await client.aclose()


def create_app() -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(_redis)
    app.router.add_post("/ticket", create)
    app.router.add_get("/ticket", list_page)
    app.router.add_get("/ticket/{id}", get)
    app.router.add_post("/ticket/{id}/invalidate", invalidate)
    app.router.add_post("/checkin", checkin)
    return app
