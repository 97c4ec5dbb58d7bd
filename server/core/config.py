"""Service configuration, read once from environment variables (defaults fit the local stack)."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass

_FALSE = ("0", "false", "no")


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL (`postgresql+psycopg://…`) as libpq takes it."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", database_url)


class ConfigurationError(ValueError):
    """A setting is missing or wrong: the process refuses to start, printing this message."""


def _parse(raw: str, default: object) -> object:
    """An environment value as the type of the field's default."""
    if isinstance(default, bool):
        return raw.strip().lower() not in _FALSE
    return type(default)(raw)


@dataclass(frozen=True)
class Settings:
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    metrics_port: int = 9464
    database_url: str = "postgresql+psycopg://library@127.0.0.1:15432/library"
    db_pool_size: int = 10
    # Bounds on waiting for PostgreSQL (server/core/db.py): a connection (connect and pool checkout), a
    # statement (`statement_timeout`; the client gives a hung server one second more), a lock
    # (`lock_timeout`). Past them a call fails UNAVAILABLE instead of hanging.
    db_connect_timeout_seconds: float = 3.0
    db_statement_timeout_seconds: float = 5.0
    db_lock_timeout_seconds: float = 3.0
    redis_url: str = "redis://127.0.0.1:16379/0"
    # "single" (one Redis) or "cluster" (a Redis Cluster; REDIS_URL names any of its nodes): every client of
    # the server and the relay (server/core/redis.py).
    redis_mode: str = "single"
    redis_pool_size: int = 64
    # Longest wait for Redis (connect, a reply, a pooled connection), for every client of the server.
    redis_timeout_seconds: float = 2.0
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    kafka_session_timeout_ms: int = 1000
    kafka_heartbeat_interval_ms: int = 200
    s3_endpoint_url: str = "http://127.0.0.1:18333"
    s3_access_key_id: str = "library-dev"
    s3_secret_access_key: str = "library-dev-secret"
    s3_bucket: str = "library"
    s3_region: str = "us-east-1"
    s3_connect_timeout_seconds: float = 2.0
    s3_read_timeout_seconds: float = 5.0
    # Longest time one S3 operation may take, retries included (then UNAVAILABLE).
    s3_timeout_seconds: float = 5.0
    s3_max_attempts: int = 2
    s3_max_pool_connections: int = 32
    jwt_jwks_file: str = ""
    jwt_jwks_url: str = ""
    jwt_hs256_secret: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    # Clock skew allowed on exp/nbf/iat; scripts/render-envoy.py gives Envoy the same value.
    jwt_leeway_seconds: int = 30
    # Shortest time between two JWKS URL fetches caused by tokens naming an unknown kid.
    jwt_jwks_refetch_seconds: float = 30.0
    event_source: str = "/library-service"
    # OpenTelemetry (server/core/tracing.py): ratio of new traces sampled (a caller's decision is followed),
    # OTLP/gRPC collector (export off when empty), service name on the spans.
    otel_traces_sampler_arg: float = 0.1
    otel_exporter_otlp_endpoint: str = ""
    otel_service_name: str = "library-service"
    # The outbox relay (server/core/events/relay.py): idle poll period, rows per batch, refusals of one row
    # before it is dead-lettered, the first hold of a partition after a refusal (doubled per attempt), how
    # often partition leases are renewed and rebalanced, how long a lease lasts unrenewed (a hung relay's
    # partitions are taken over after it; keep it above the send timeout, so a slow send is not a hang), and
    # how long one send may take (Kafka delivery, Redis).
    outbox_poll_seconds: float = 0.5
    outbox_batch_size: int = 200
    outbox_max_attempts: int = 5
    outbox_retry_backoff_seconds: float = 0.5
    outbox_rebalance_seconds: float = 2.0
    outbox_lease_seconds: float = 15.0
    outbox_send_timeout_seconds: float = 10.0
    # How often the dead-letter gauges are recounted without a change announced (each change recounts).
    dead_letter_gauges_refresh_seconds: float = 60.0
    notification_stream_maxlen: int = 1000
    # A user's notification stream expires this long after the last notification added to it.
    notification_stream_ttl_seconds: int = 7 * 24 * 3600
    # Idempotent consumers (server/core/events/consumer.py): attempts at one event before it is
    # dead-lettered, and the first retry delay (doubled per attempt).
    consumer_max_attempts: int = 5
    consumer_retry_backoff_seconds: float = 0.2
    # Retention (server/core/retention.py): how long each kind of row is kept, how many rows one delete
    # takes, and how often the job runs.
    outbox_retention_seconds: int = 7 * 24 * 3600
    processed_events_retention_seconds: int = 30 * 24 * 3600
    request_replays_retention_seconds: int = 7 * 24 * 3600
    applied_orders_retention_seconds: int = 90 * 24 * 3600
    # what an ended download's client held (server/downloads/retention.py), kept after it ended
    download_holdings_retention_seconds: int = 24 * 3600
    retention_batch_size: int = 1000
    retention_interval_seconds: float = 60.0
    shutdown_grace_seconds: float = 10.0
    log_level: str = "INFO"
    workers_enabled: bool = True
    playtime_heartbeat_interval_seconds: int = 60
    # Heartbeats of one session: at most RATE per interval sustained, in bursts of BURST (0 = no limit).
    playtime_heartbeat_rate_per_interval: int = 2
    playtime_heartbeat_burst: int = 3
    # Per-user limits of other RPCs, "Service/Method=count/seconds" (server/core/rate_limit.py).
    rate_limits: str = (
        "AchievementService/UpdateAchievementProgress=60/60,"
        "PlaytimeTrackerService/RecordOfflineSessions=10/60,"
        "CloudSaveService/RequestSaveGameUploadURL=60/60,"
        "DownloadService/ReportDownloadProgress=120/60"
    )
    playtime_checkpoint_seconds: float = 300.0
    playtime_reaper_seconds: float = 15.0
    # Offline sessions older than this are rejected (TOO_OLD), as are those before the acquisition.
    playtime_offline_max_age_days: int = 30
    # Wishlist sales (SPEC §6): wishers announced per fan-out transaction, and how often an idle fan-out
    # worker looks for new sales.
    library_sale_batch_size: int = 500
    library_sale_poll_seconds: float = 1.0
    # Cloud saves (SPEC §6): quota per user per product, the largest file, slots per product, committed
    # versions kept per slot, presigned URL lifetimes, how long after its URL expired a reservation (and
    # any object uploaded to it) is kept, and how often the sweeper releases reservations and deletes
    # queued objects.
    saves_quota_bytes: int = 1024**3
    saves_max_file_bytes: int = 100 * 1024**2
    saves_max_slots: int = 100
    saves_retained_versions: int = 10
    saves_upload_url_expiry_seconds: int = 900
    saves_download_url_expiry_seconds: int = 300
    saves_reservation_grace_seconds: int = 600
    saves_sweep_seconds: float = 30.0
    # Downloads content (SPEC §6): lifetime of the presigned PUTs of a version upload and of the presigned
    # chunk GETs in manifests (cached in Redis for that long, so repeated pages don't re-sign).
    download_upload_url_expiry_seconds: int = 900
    download_chunk_url_expiry_seconds: int = 900
    # Re-run the queues of users with waiting downloads this often (a schedule window opened, a limit rose).
    download_queue_promote_seconds: float = 30.0
    # Family sharing (SPEC §6): active links an owner may have; how long a borrower keeps playing (credited)
    # after the owner starts playing from the same library.
    family_max_active_links: int = 5
    family_reclaim_grace_seconds: int = 300
    # WebSocket notification relay (gateway/, SPEC §8)
    ws_host: str = "127.0.0.1"
    ws_port: int = 8765
    ws_metrics_port: int = 9465
    ws_max_connections_per_user: int = 5
    ws_ping_interval_seconds: float = 20.0
    ws_send_timeout_seconds: float = 10.0
    ws_write_limit_bytes: int = 65536
    # Connections share this pool for their reads (plain XRANGE; one subscriber per process says when to
    # read), the slot scripts and the refresher: it does not grow with the sockets.
    ws_redis_pool_size: int = 32
    # Listen backlog of the relay's socket (handshake bursts; the kernel caps it at net.core.somaxconn).
    ws_backlog: int = 4096
    # Open connections per relay process; handshakes beyond get 503. Each needs one file descriptor:
    # keep it below the process's open-file limit (ulimit -n; python -m gateway raises the soft limit).
    ws_max_connections: int = 15000

    def __post_init__(self) -> None:
        """Refuses combinations that start but then misbehave."""
        lease, send = self.outbox_lease_seconds, self.outbox_send_timeout_seconds
        rebalance = self.outbox_rebalance_seconds
        if lease <= max(send, rebalance):
            # a healthy relay whose send or renewal outlasts its leases loses its partitions mid-batch
            raise ConfigurationError(
                f"OUTBOX_LEASE_SECONDS ({lease:g}) must be greater than OUTBOX_SEND_TIMEOUT_SECONDS "
                f"({send:g}) and OUTBOX_REBALANCE_SECONDS ({rebalance:g}): a relay whose send outlasts its "
                "lease loses its partitions to another relay and events are sent twice"
            )

    @classmethod
    def from_env(cls) -> Settings:
        """Each field from the environment variable of the same name in upper case (`grpc_port` from
        GRPC_PORT), else its default."""
        values = {}
        for field in dataclasses.fields(cls):
            raw = os.environ.get(field.name.upper())
            if raw is not None:
                values[field.name] = _parse(raw, field.default)
        return cls(**values)
