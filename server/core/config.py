"""Service configuration, read once from environment variables (defaults fit the local stack)."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))


@dataclass(frozen=True)
class Settings:
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    metrics_port: int = 9464
    database_url: str = "postgresql+psycopg://library@127.0.0.1:15432/library"
    db_pool_size: int = 10
    redis_url: str = "redis://127.0.0.1:16379/0"
    redis_pool_size: int = 64
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    kafka_session_timeout_ms: int = 1000
    kafka_heartbeat_interval_ms: int = 200
    s3_endpoint_url: str = "http://127.0.0.1:18333"
    s3_access_key_id: str = "library-dev"
    s3_secret_access_key: str = "library-dev-secret"
    s3_bucket: str = "library"
    s3_region: str = "us-east-1"
    jwt_jwks_file: str = ""
    jwt_jwks_url: str = ""
    jwt_hs256_secret: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    event_source: str = "/library-service"
    outbox_poll_seconds: float = 0.5
    notification_stream_maxlen: int = 1000
    shutdown_grace_seconds: float = 10.0
    log_level: str = "INFO"
    workers_enabled: bool = True
    playtime_heartbeat_interval_seconds: int = 60
    playtime_checkpoint_seconds: float = 300.0
    playtime_reaper_seconds: float = 15.0
    # WebSocket notification relay (gateway/, SPEC §8)
    ws_host: str = "127.0.0.1"
    ws_port: int = 8765
    ws_metrics_port: int = 9465
    ws_max_connections_per_user: int = 5
    ws_ping_interval_seconds: float = 20.0
    ws_send_timeout_seconds: float = 10.0
    ws_write_limit_bytes: int = 65536
    # Each open WebSocket waits on Redis with its own connection (XREAD BLOCK).
    ws_redis_pool_size: int = 4096

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            grpc_host=_env("GRPC_HOST", cls.grpc_host),
            grpc_port=_env_int("GRPC_PORT", cls.grpc_port),
            metrics_port=_env_int("METRICS_PORT", cls.metrics_port),
            database_url=_env("DATABASE_URL", cls.database_url),
            db_pool_size=_env_int("DB_POOL_SIZE", cls.db_pool_size),
            redis_url=_env("REDIS_URL", cls.redis_url),
            redis_pool_size=_env_int("REDIS_POOL_SIZE", cls.redis_pool_size),
            kafka_bootstrap_servers=_env("KAFKA_BOOTSTRAP_SERVERS", cls.kafka_bootstrap_servers),
            kafka_session_timeout_ms=_env_int("KAFKA_SESSION_TIMEOUT_MS", cls.kafka_session_timeout_ms),
            kafka_heartbeat_interval_ms=_env_int(
                "KAFKA_HEARTBEAT_INTERVAL_MS", cls.kafka_heartbeat_interval_ms
            ),
            s3_endpoint_url=_env("S3_ENDPOINT_URL", cls.s3_endpoint_url),
            s3_access_key_id=_env("S3_ACCESS_KEY_ID", cls.s3_access_key_id),
            s3_secret_access_key=_env("S3_SECRET_ACCESS_KEY", cls.s3_secret_access_key),
            s3_bucket=_env("S3_BUCKET", cls.s3_bucket),
            s3_region=_env("S3_REGION", cls.s3_region),
            jwt_jwks_file=_env("JWT_JWKS_FILE", cls.jwt_jwks_file),
            jwt_jwks_url=_env("JWT_JWKS_URL", cls.jwt_jwks_url),
            jwt_hs256_secret=_env("JWT_HS256_SECRET", cls.jwt_hs256_secret),
            jwt_issuer=_env("JWT_ISSUER", cls.jwt_issuer),
            jwt_audience=_env("JWT_AUDIENCE", cls.jwt_audience),
            event_source=_env("EVENT_SOURCE", cls.event_source),
            outbox_poll_seconds=_env_float("OUTBOX_POLL_SECONDS", cls.outbox_poll_seconds),
            notification_stream_maxlen=_env_int("NOTIFICATION_STREAM_MAXLEN", cls.notification_stream_maxlen),
            shutdown_grace_seconds=_env_float("SHUTDOWN_GRACE_SECONDS", cls.shutdown_grace_seconds),
            log_level=_env("LOG_LEVEL", cls.log_level),
            workers_enabled=_env("WORKERS_ENABLED", "1") not in ("0", "false", "no"),
            playtime_heartbeat_interval_seconds=_env_int(
                "PLAYTIME_HEARTBEAT_INTERVAL_SECONDS", cls.playtime_heartbeat_interval_seconds
            ),
            playtime_checkpoint_seconds=_env_float(
                "PLAYTIME_CHECKPOINT_SECONDS", cls.playtime_checkpoint_seconds
            ),
            playtime_reaper_seconds=_env_float("PLAYTIME_REAPER_SECONDS", cls.playtime_reaper_seconds),
            ws_host=_env("WS_HOST", cls.ws_host),
            ws_port=_env_int("WS_PORT", cls.ws_port),
            ws_metrics_port=_env_int("WS_METRICS_PORT", cls.ws_metrics_port),
            ws_max_connections_per_user=_env_int(
                "WS_MAX_CONNECTIONS_PER_USER", cls.ws_max_connections_per_user
            ),
            ws_ping_interval_seconds=_env_float("WS_PING_INTERVAL_SECONDS", cls.ws_ping_interval_seconds),
            ws_send_timeout_seconds=_env_float("WS_SEND_TIMEOUT_SECONDS", cls.ws_send_timeout_seconds),
            ws_write_limit_bytes=_env_int("WS_WRITE_LIMIT_BYTES", cls.ws_write_limit_bytes),
            ws_redis_pool_size=_env_int("WS_REDIS_POOL_SIZE", cls.ws_redis_pool_size),
        )
