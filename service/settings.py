"""Runtime settings, read once from the environment into a frozen dataclass."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .api_keys import ApiKeys
from .signing import TicketSigner


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


class Topology(StrEnum):
    """How Redis is deployed: what REDIS_CLUSTER_NODES or REDIS_SENTINELS selects."""

    STANDALONE = "standalone"
    SENTINEL = "sentinel"
    CLUSTER = "cluster"


Address = tuple[str, int]


def parse_addresses(name: str, raw: str) -> tuple[Address, ...]:
    """`host:port,host:port` (IPv6 as [addr]:port)."""
    out: list[Address] = []
    for item in (x.strip() for x in raw.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{name}: {item!r} is not host:port")
        out.append((host, int(port)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Settings:
    # Standalone Redis, and the default topology: REDIS_URL alone means one redis-server.
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Sentinel: the sentinels to ask, and the name of the master they watch.
    redis_sentinels: tuple[Address, ...] = ()
    redis_sentinel_master: str = "tickets"
    # The sentinels' own password (their requirepass), when they have one.
    redis_sentinel_password: str = ""
    # Cluster: some of its nodes (the client discovers the rest).
    redis_cluster_nodes: tuple[Address, ...] = ()
    # For Sentinel and Cluster (a standalone URL carries its own): Redis ACL user and password.
    redis_username: str = ""
    redis_password: str = ""
    # Replicas that must confirm each write (WAIT) before it is answered as a success; the
    # default is 1 where the topology has replicas (Sentinel, Cluster), 0 standalone.
    redis_min_replicas_ack: int | None = None
    # How long a write waits for them; within REDIS_TIMEOUT_MS.
    redis_wait_timeout_ms: int = 500
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
    # Approximate cap of each shard's change stream (64 shards, 1.6 million entries in all):
    # XADD MAXLEN ~.
    events_maxlen: int = 25_000
    # How long a gate may annul its own last scan (the turnstile did not turn).
    annul_window_s: int = 60
    # How old an offline device's scan may be when it is uploaded and still be judged at its
    # own time; an older one is judged as of this long ago (a gate offline for a day).
    offline_max_age_s: int = 24 * 3600
    # Expensive work (pages by their `limit`, tokens and QR codes by their CPU, service/api/budget.py)
    # that one key, and all keys, may have in flight on a worker: 4 pages of 1,000 a key.
    budget_per_key: int = 4000
    budget_per_worker: int = 16000
    # How long a request over its key's budget waits for room before its 429.
    budget_wait_ms: int = 1000
    # How long a new device's enrolment code works (POST /device/enrol).
    enrolment_ttl_s: int = 15 * 60
    # How often each worker asks whether a device was rolled or revoked (a GET of one
    # counter, off the request path): a revoked key is refused everywhere within this.
    device_cache_check_ms: int = 250
    # Webhooks (docs/webhooks.md). Networks deliveries may go to although they are not public
    # (CIDRs: 127.0.0.0/8 for a receiver on the same host); none by default.
    webhook_allowed_networks: tuple[str, ...] = ()
    # Each attempt's bound; a failed delivery is tried again after about webhook_first_retry_ms,
    # twice as long after each failure up to webhook_retry_cap_s, for webhook_retry_for_s,
    # then given up and its webhook disabled.
    webhook_timeout_ms: int = 10_000
    webhook_first_retry_ms: int = 5_000
    webhook_retry_cap_s: int = 6 * 3600
    webhook_retry_for_s: int = 3 * 24 * 3600
    # How long a delivery stays in the log; at least webhook_retry_for_s.
    webhook_keep_s: int = 7 * 24 * 3600
    # After a roll, how long the old secret still signs (both are sent).
    webhook_secret_grace_s: int = 24 * 3600
    # Attempts in flight to one webhook at a time.
    webhook_concurrency: int = 4
    # The live view (GET /event/{id}/live, docs/live.md): how often each worker looks for new
    # scans of an event someone watches, re-reads its counters and its devices when none came,
    # when a device not seen counts as offline, the heartbeat of an idle stream, the viewers
    # a worker serves, and how long a picture is kept after its last viewer left.
    live_poll_ms: int = 200
    live_refresh_ms: int = 5_000
    live_offline_after_s: int = 30
    live_heartbeat_s: int = 15
    live_max_viewers: int = 2_000
    live_linger_s: int = 30
    # Empty: auth is off (the seed's behaviour), loudly.
    api_keys: ApiKeys = ApiKeys()
    # The secret nginx sends in X-Proxy-Auth. Only a request that carries it has its
    # X-Request-Id and X-Real-IP believed. Empty: no request is taken as forwarded.
    proxy_secret: str = ""
    # Ed25519 keys in PEM that sign the tickets' QR codes (service/signing.py); the last
    # private key signs, all verify. Empty: tickets are not signed.
    signer: TicketSigner = TicketSigner()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        d = cls()
        replicas_ack = env.get("REDIS_MIN_REPLICAS_ACK", "").strip()
        settings = cls(
            redis_url=env.get("REDIS_URL", "").strip() or d.redis_url,
            redis_sentinels=parse_addresses("REDIS_SENTINELS", env.get("REDIS_SENTINELS", "")),
            redis_sentinel_master=env.get("REDIS_SENTINEL_MASTER", "").strip() or d.redis_sentinel_master,
            redis_sentinel_password=secret_text(env, "REDIS_SENTINEL_PASSWORD").strip(),
            redis_cluster_nodes=parse_addresses("REDIS_CLUSTER_NODES", env.get("REDIS_CLUSTER_NODES", "")),
            redis_username=env.get("REDIS_USERNAME", "").strip(),
            redis_password=secret_text(env, "REDIS_PASSWORD").strip(),
            redis_min_replicas_ack=env_int(env, "REDIS_MIN_REPLICAS_ACK", 0, 0) if replicas_ack else None,
            redis_wait_timeout_ms=env_int(env, "REDIS_WAIT_TIMEOUT_MS", d.redis_wait_timeout_ms, 1),
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
            offline_max_age_s=env_int(env, "OFFLINE_MAX_AGE_S", d.offline_max_age_s, 1),
            budget_per_key=env_int(env, "BUDGET_PER_KEY", d.budget_per_key, 1),
            budget_per_worker=env_int(env, "BUDGET_PER_WORKER", d.budget_per_worker, 1),
            budget_wait_ms=env_int(env, "BUDGET_WAIT_MS", d.budget_wait_ms, 0),
            enrolment_ttl_s=env_int(env, "ENROLMENT_TTL_S", d.enrolment_ttl_s, 1),
            device_cache_check_ms=env_int(env, "DEVICE_CACHE_CHECK_MS", d.device_cache_check_ms, 10),
            webhook_allowed_networks=_networks(env.get("WEBHOOK_ALLOWED_NETWORKS", "")),
            webhook_timeout_ms=env_int(env, "WEBHOOK_TIMEOUT_MS", d.webhook_timeout_ms, 100),
            webhook_first_retry_ms=env_int(env, "WEBHOOK_FIRST_RETRY_MS", d.webhook_first_retry_ms, 10),
            webhook_retry_cap_s=env_int(env, "WEBHOOK_RETRY_CAP_S", d.webhook_retry_cap_s, 1),
            webhook_retry_for_s=env_int(env, "WEBHOOK_RETRY_FOR_S", d.webhook_retry_for_s, 1),
            webhook_keep_s=env_int(env, "WEBHOOK_KEEP_S", d.webhook_keep_s, 1),
            webhook_secret_grace_s=env_int(env, "WEBHOOK_SECRET_GRACE_S", d.webhook_secret_grace_s, 0),
            webhook_concurrency=env_int(env, "WEBHOOK_CONCURRENCY", d.webhook_concurrency, 1),
            live_poll_ms=env_int(env, "LIVE_POLL_MS", d.live_poll_ms, 10),
            live_refresh_ms=env_int(env, "LIVE_REFRESH_MS", d.live_refresh_ms, 100),
            live_offline_after_s=env_int(env, "LIVE_OFFLINE_AFTER_S", d.live_offline_after_s, 1),
            live_heartbeat_s=env_int(env, "LIVE_HEARTBEAT_S", d.live_heartbeat_s, 1),
            live_max_viewers=env_int(env, "LIVE_MAX_VIEWERS", d.live_max_viewers, 1),
            live_linger_s=env_int(env, "LIVE_LINGER_S", d.live_linger_s, 0),
            api_keys=ApiKeys.parse(secret_text(env, "API_KEYS")),
            proxy_secret=_proxy_secret(secret_text(env, "PROXY_SECRET").strip()),
            signer=TicketSigner.parse(secret_text(env, "TICKET_SIGNING_KEYS")),
        )
        if settings.redis_sentinels and settings.redis_cluster_nodes:
            raise ValueError("set REDIS_SENTINELS or REDIS_CLUSTER_NODES, not both")
        waits = settings.topology is not Topology.STANDALONE or bool(settings.redis_min_replicas_ack)
        if waits and settings.redis_wait_timeout_ms >= settings.redis_timeout_ms:
            raise ValueError("REDIS_WAIT_TIMEOUT_MS must be less than REDIS_TIMEOUT_MS")
        if settings.webhook_keep_s < settings.webhook_retry_for_s:
            raise ValueError("WEBHOOK_KEEP_S must be at least WEBHOOK_RETRY_FOR_S")
        return settings

    @property
    def topology(self) -> Topology:
        if self.redis_cluster_nodes:
            return Topology.CLUSTER
        return Topology.SENTINEL if self.redis_sentinels else Topology.STANDALONE


def _networks(raw: str) -> tuple[str, ...]:
    """WEBHOOK_ALLOWED_NETWORKS: CIDRs separated by commas or spaces, each checked."""
    found = tuple(n for n in raw.replace(",", " ").split() if n)
    for network in found:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(f"WEBHOOK_ALLOWED_NETWORKS: {network!r} is not a network") from None
    return found


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
