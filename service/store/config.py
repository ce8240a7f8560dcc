"""The store's own settings, taken from the service's."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings


@dataclass(frozen=True, slots=True)
class StoreConfig:
    replay_ttl_s: int = 60
    idempotency_ttl_s: int = 86400
    events_maxlen: int = 100_000
    timeout_ms: int = 1000
    max_concurrent: int = 64
    # None: 1 where the client's topology has replicas (Sentinel, Cluster), 0 standalone.
    min_replicas_ack: int | None = None
    wait_timeout_ms: int = 500
    offline_max_age_s: int = 24 * 3600
    enrolment_ttl_s: int = 15 * 60

    @classmethod
    def from_settings(cls, s: Settings) -> StoreConfig:
        return cls(
            replay_ttl_s=s.replay_ttl_s, idempotency_ttl_s=s.idempotency_ttl_s,
            events_maxlen=s.events_maxlen, timeout_ms=s.redis_timeout_ms,
            max_concurrent=s.redis_max_connections, min_replicas_ack=s.redis_min_replicas_ack,
            wait_timeout_ms=s.redis_wait_timeout_ms, offline_max_age_s=s.offline_max_age_s,
            enrolment_ttl_s=s.enrolment_ttl_s,
        )
