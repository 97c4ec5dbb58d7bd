"""Prometheus metrics (SPEC §9), served on their own port by the composition root."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RPC_HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed, by method and status code.", ["method", "code"]
)
RPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "RPC latency, by method.",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
OUTBOX_LAG = Gauge("outbox_lag_seconds", "Age of the oldest outbox row not yet published.")
OUTBOX_PUBLISHED = Counter("outbox_published_total", "Outbox rows published to Kafka or Redis.")
ACTIVE_PLAY_SESSIONS = Gauge(
    "playtime_active_sessions", "Play sessions on the reap schedule (all processes)."
)
PLAYTIME_SWEPT = Counter(
    "playtime_swept_total", "Play sessions reaped or checkpointed by this process.", ["what"]
)
WS_CONNECTIONS = Gauge("ws_connections", "Open WebSocket connections of the notification relay.")
