"""Binding a caller's Idempotency-Key to the request that first used it, for every write
whose key's slot differs from the slot of what it writes."""

from __future__ import annotations

from ..errors import IdempotencyKeyReused
from ..models import IdempotencyKey
from . import keys
from .adaptors import ClaimArgv, ClaimKeys
from .link import Link


async def bind(link: Link, idempotency: IdempotencyKey, ttl_s: int) -> None:
    """Bind the key to this request, once: the same key on any other request (another
    ticket, operation or body) is refused. Its own round trip, because the binding lives in
    the key's slot and the write in its own; a crash between the two steps leaves a binding
    that the retry of the same request passes. Not waited for by replicas: a claim lost in a
    failover is made again by the retry, and the write it guards waits for its own."""
    script_keys = ClaimKeys(keys.idempotency(idempotency.actor, idempotency.key))
    argv = ClaimArgv(idempotency.fingerprint, ttl_s)
    outcome = await link.run("idempotency_claim", link.scripts.claim, script_keys.flat(), argv.flat())
    if outcome == "mismatch":
        raise IdempotencyKeyReused()
