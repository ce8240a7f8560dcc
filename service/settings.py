"""Runtime settings, read once from the environment into a frozen dataclass."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .keyring import KeyRing


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Bounds each store call, the wait for a pooled connection included, so that a dead or
    # blackholed Redis turns into a fast 503, never a hang.
    redis_timeout_ms: int = 1000
    redis_connect_timeout_ms: int = 500
    redis_max_connections: int = 64
    # How long a transition remembers its request id, so that nginx re-sending it to another
    # replica gets the first answer back, never a false 409 (creates need no record: their
    # id derives from the request id). nginx gives up re-sending after
    # proxy_next_upstream_timeout (5 s); this is ample.
    replay_ttl_s: int = 60
    retry_after_s: int = 1
    max_body_bytes: int = 16 * 1024
    # POST /ticket/batch: 1,000 tickets with every field at its longest fit in 512 KiB.
    max_batch_body_bytes: int = 512 * 1024
    # How long an Idempotency-Key's first answer is kept (Stripe and the IETF draft: 24 h).
    idempotency_ttl_s: int = 24 * 3600
    # Approximate cap of each shard's event stream (16 shards): XADD MAXLEN ~.
    events_maxlen: int = 100_000
    # How long a gate may annul its own last scan (the turnstile did not turn).
    annul_window_s: int = 60
    # Empty: auth is off (the seed's behaviour), loudly.
    keyring: KeyRing = KeyRing()
    # The secret nginx sends in X-Proxy-Auth. Only a request that carries it has its
    # X-Request-Id and X-Real-IP believed. Empty: no request is taken as forwarded.
    proxy_secret: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        d = cls()
        return cls(
            redis_url=env.get("REDIS_URL", "").strip() or d.redis_url,
            redis_timeout_ms=env_int(env, "REDIS_TIMEOUT_MS", d.redis_timeout_ms, 1),
            redis_connect_timeout_ms=env_int(
                env, "REDIS_CONNECT_TIMEOUT_MS", d.redis_connect_timeout_ms, 1
            ),
            redis_max_connections=env_int(env, "REDIS_MAX_CONNECTIONS", d.redis_max_connections, 1),
            replay_ttl_s=env_int(env, "REPLAY_TTL_S", d.replay_ttl_s, 1),
            retry_after_s=env_int(env, "RETRY_AFTER_S", d.retry_after_s, 1),
            max_body_bytes=env_int(env, "MAX_BODY_BYTES", d.max_body_bytes, 2),
            max_batch_body_bytes=env_int(env, "MAX_BATCH_BODY_BYTES", d.max_batch_body_bytes, 2),
            idempotency_ttl_s=env_int(env, "IDEMPOTENCY_TTL_S", d.idempotency_ttl_s, 1),
            events_maxlen=env_int(env, "EVENTS_MAXLEN", d.events_maxlen, 1),
            annul_window_s=env_int(env, "ANNUL_WINDOW_S", d.annul_window_s, 1),
            keyring=KeyRing.parse(secret_text(env, "API_KEYS")),
            proxy_secret=_proxy_secret(secret_text(env, "PROXY_SECRET").strip()),
        )


def secret_text(env: Mapping[str, str], name: str) -> str:
    """NAME, or the contents of NAME_FILE (a Docker or Kubernetes secret, say)."""
    path = env.get(f"{name}_FILE", "").strip()
    if path and env.get(name, "").strip():
        raise ValueError(f"set {name} or {name}_FILE, not both")
    return Path(path).read_text() if path else env.get(name, "")


def _proxy_secret(value: str) -> str:
    if value and (len(value) < 16 or not value.isascii() or not value.isalnum()):
        raise ValueError("PROXY_SECRET must be 16 or more ASCII letters and digits")
    return value
