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
# The outbox relay (server/core/events/relay.py), per channel (kafka, notification). Each process reports
# the partitions it owns: the lag of the outbox is the largest value across processes.
OUTBOX_LAG = Gauge(
    "outbox_lag_seconds",
    "Age of the oldest pending outbox row of the partitions this process relays.",
    ["channel"],
)
OUTBOX_PUBLISHED = Counter("outbox_published_total", "Outbox rows published to Kafka or Redis.", ["channel"])
OUTBOX_RELAY_FAILURES = Counter(
    "outbox_relay_failures_total",
    "Relay passes that failed or left rows unsent (the channel was down).",
    ["channel"],
)
OUTBOX_PARTITIONS_OWNED = Gauge(
    "outbox_partitions_owned", "Outbox partitions this process relays.", ["channel"]
)
OUTBOX_LEASES_LOST = Counter(
    "outbox_leases_lost_total",
    "Batches whose partition lease another relay had taken over before they were marked (left to it).",
    ["channel"],
)
OUTBOX_DEAD_LETTERED = Counter(
    "outbox_dead_lettered_total",
    "Outbox rows moved to outbox_dead_letters after bounded attempts.",
    ["channel"],
)
OUTBOX_DEAD_LETTERS = Gauge("outbox_dead_letters", "Rows in outbox_dead_letters.", ["channel"])
# Idempotent Kafka consumers (server/core/events/consumer.py).
CONSUMER_RETRIES = Counter(
    "consumer_retries_total", "Failed attempts at handling an event that were retried.", ["consumer"]
)
CONSUMER_DEAD_LETTERED = Counter(
    "consumer_dead_lettered_total", "Kafka records moved to consumer_dead_letters.", ["consumer"]
)
CONSUMER_DEAD_LETTERS = Gauge("consumer_dead_letters", "Rows in consumer_dead_letters.", ["consumer"])
# Retention (server/core/retention.py).
RETENTION_PRUNED = Counter("retention_pruned_total", "Rows deleted by retention, by table.", ["table"])
ACTIVE_PLAY_SESSIONS = Gauge(
    "playtime_active_sessions", "Play sessions on the reap schedule (all processes)."
)
PLAYTIME_SWEPT = Counter(
    "playtime_swept_total", "Play sessions reaped or checkpointed by this process.", ["what"]
)
WS_CONNECTIONS = Gauge("ws_connections", "Open WebSocket connections of the notification relay.")
