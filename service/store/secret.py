"""The deployment's shared secret, kept in Redis so that every replica derives the same keys
from it with no configuration: ticket ids from nginx's request ids, and cursor signatures."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from . import keys
from .link import Link


class DeploymentSecret:
    __slots__ = ("_link", "_secret", "_purpose_keys")

    def __init__(self, link: Link) -> None:
        self._link = link
        self._secret: bytes | None = None
        # Derived once per purpose: a create through nginx pays one HMAC, not two.
        self._purpose_keys: dict[str, bytes] = {}

    async def _value(self) -> bytes:
        """Made once by whichever worker asks first (SET NX), then read by all; cached."""
        if self._secret is None:
            async with self._link.call("secret"):
                await self._link.redis.set(keys.DEPLOYMENT_SECRET_KEY, secrets.token_hex(32), nx=True)
                value = await self._link.redis.get(keys.DEPLOYMENT_SECRET_KEY)
            self._secret = str(value).encode()
        return self._secret

    async def mac(self, purpose: str, message: str) -> bytes:
        """HMAC-SHA256 of `message` under a key derived for `purpose`: keys for different
        uses never coincide."""
        purpose_key = self._purpose_keys.get(purpose)
        if purpose_key is None:
            purpose_key = hmac.new(await self._value(), purpose.encode(), hashlib.sha256).digest()
            self._purpose_keys[purpose] = purpose_key
        return hmac.digest(purpose_key, message.encode(), "sha256")

    async def expand(self, purpose: str, message: str, n_bytes: int) -> bytes:
        """`n_bytes` bytes that only the secret's holders can compute from `message`: its
        HMAC (as above) expanded by SHAKE-256, an extendable-output function. A batch's
        1,000 ids cost one HMAC and one hash, not 1,000 HMACs."""
        return hashlib.shake_256(await self.mac(purpose, message)).digest(n_bytes)
