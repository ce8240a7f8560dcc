"""Binding a caller's Idempotency-Key to the request that first used it, for every write
whose key's slot differs from the slot of what it writes."""

from __future__ import annotations

from ..errors import IdempotencyKeyReused
from ..models import IdempotencyKey
from . import keys
from .calls import Caller
from .scripts import Scripts


async def bind(caller: Caller, scripts: Scripts, idempotency: IdempotencyKey, ttl_s: int) -> None:
    """Bind the key to this request, once: the same key on any other request (another
    ticket, operation or body) is refused. Its own round trip, because the binding lives in
    the key's slot and the write in its own; a crash between the two steps leaves a binding
    that the retry of the same request passes."""
    async with caller.call("idempotency_claim"):
        outcome = await scripts.claim(keys=[keys.idempotency(idempotency.actor, idempotency.key)],
                                      args=[idempotency.fingerprint, ttl_s])
    if outcome == "mismatch":
        raise IdempotencyKeyReused()
