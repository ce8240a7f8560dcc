"""The Lua scripts, loaded from the package once and registered into typed attributes.
redis-py's Script sends EVALSHA and loads the script again on NOSCRIPT (a restarted or
failed-over Redis has an empty script cache)."""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def _source(name: str) -> str:
    return resources.files("service.lua").joinpath(name).read_text(encoding="utf-8")


class Scripts:
    __slots__ = ("create", "transition", "claim", "scan", "read_many", "history", "process", "event", "list", "checkin",
                 "annul", "batch")

    def __init__(self, redis: Redis) -> None:
        self.create: AsyncScript = redis.register_script(_source("create.lua"))
        self.transition: AsyncScript = redis.register_script(_source("transition.lua"))
        self.claim: AsyncScript = redis.register_script(_source("claim.lua"))
        self.scan: AsyncScript = redis.register_script(_source("scan.lua"))
        self.read_many: AsyncScript = redis.register_script(_source("read_many.lua"))
        self.history: AsyncScript = redis.register_script(_source("history.lua"))
        self.process: AsyncScript = redis.register_script(_source("process.lua"))
        self.event: AsyncScript = redis.register_script(_source("event.lua"))
        self.list: AsyncScript = redis.register_script(_source("list.lua"))
        self.checkin: AsyncScript = redis.register_script(_source("checkin.lua"))
        self.annul: AsyncScript = redis.register_script(_source("annul.lua"))
        self.batch: AsyncScript = redis.register_script(_source("batch.lua"))
