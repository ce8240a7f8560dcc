"""The Lua scripts, loaded from the package once and registered into typed attributes. The
link (link.py) sends them by EVALSHA and loads them again where Redis answers NOSCRIPT: a
restarted Redis, a promoted replica and a new Cluster node all start with an empty script
cache, which replication does not fill."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str


def script_from(name: str, source: str) -> Script:
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())


def _script(name: str) -> Script:
    return script_from(name, resources.files("service.lua").joinpath(f"{name}.lua").read_text(encoding="utf-8"))


class Scripts:
    __slots__ = ("create", "transition", "claim", "scan", "read_many", "history", "process", "event", "list", "checkin",
                 "annul", "batch", "import_codes", "withdraw", "feed", "device", "enrol", "device_state", "seen",
                 "webhook", "webhook_state", "deliver_enqueue", "deliver_claim", "deliver_settle", "deliver_retry")

    def __init__(self) -> None:
        self.create = _script("create")
        self.transition = _script("transition")
        self.claim = _script("claim")
        self.scan = _script("scan")
        self.read_many = _script("read_many")
        self.history = _script("history")
        self.process = _script("process")
        self.event = _script("event")
        self.list = _script("list")
        self.checkin = _script("checkin")
        self.annul = _script("annul")
        self.batch = _script("batch")
        self.import_codes = _script("import_codes")
        self.withdraw = _script("withdraw")
        self.feed = _script("feed")
        self.device = _script("device")
        self.enrol = _script("enrol")
        self.device_state = _script("device_state")
        self.seen = _script("seen")
        self.webhook = _script("webhook")
        self.webhook_state = _script("webhook_state")
        self.deliver_enqueue = _script("deliver_enqueue")
        self.deliver_claim = _script("deliver_claim")
        self.deliver_settle = _script("deliver_settle")
        self.deliver_retry = _script("deliver_retry")


SCRIPTS = Scripts()
