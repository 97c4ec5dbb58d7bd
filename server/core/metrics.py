"""Prometheus metrics (SPEC §9), served on their own port by the composition root."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

import grpc
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_HANDLED = ("grpc_server_handled_total", "RPCs completed, by method and status code.")
_LATENCY = ("grpc_server_handling_seconds", "RPC latency, by method.")


class RpcStats:
    """One method's completed calls: counts per status code and the latency histogram."""

    __slots__ = ("buckets", "codes", "created", "method", "seconds")

    def __init__(self, method: str) -> None:
        self.method = method
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket (not cumulative), +Inf last
        self.seconds = 0.0
        self.codes: dict[grpc.StatusCode, tuple[int, float]] = {}  # code -> (count, first seen)
        self.created = time.time()

    def observe(self, seconds: float, code: grpc.StatusCode) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bound >= seconds: `le`
        self.seconds += seconds
        count, since = self.codes.get(code) or (0, time.time())
        self.codes[code] = (count + 1, since)


class RpcMetrics(Collector):
    """`grpc_server_handled_total{method,code}` and `grpc_server_handling_seconds{method}`, exposed as
    prometheus_client's Counter and Histogram would expose them, but recorded without locks.

    Those take a lock per increment (an observation takes two and searches the buckets in Python): about
    5-8 µs of every heartbeat on this machine. Calls are recorded only on the event loop's thread (the call
    pipeline), so plain numbers suffice; the metrics endpoint's thread reads them. A scrape may see a call
    in one series and not yet in another, as prometheus_client's per-value locks allow too."""

    def __init__(self) -> None:
        self._methods: dict[str, RpcStats] = {}

    def of(self, method: str) -> RpcStats:
        """The stats of `method` (a gRPC path), created at 0 on first use (exposed from then on)."""
        stats = self._methods.get(method)
        if stats is None:
            stats = self._methods[method] = RpcStats(method)
        return stats

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(*_HANDLED, labels=("method", "code")), HistogramMetricFamily(*_LATENCY)]

    def collect(self) -> Iterator[Metric]:
        handled = CounterMetricFamily(*_HANDLED, labels=("method", "code"))
        latency = HistogramMetricFamily(*_LATENCY, labels=("method",))
        for stats in list(self._methods.values()):
            for code, (count, since) in list(stats.codes.items()):
                handled.add_metric((stats.method, code.name), count, created=since)
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), list(stats.buckets), strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            latency.add_metric((stats.method,), buckets, stats.seconds)
            latency.samples.append(Sample(f"{_LATENCY[0]}_created", {"method": stats.method}, stats.created))
        yield handled
        yield latency


RPCS = RpcMetrics()
REGISTRY.register(RPCS)
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
# The relay's event loop (gateway/loop_probe.py): how late its probe timer ran, the garbage collector's
# pauses, and the stalls (lags over the probe's threshold) with the CPU the relay itself used in them.
WS_LOOP_LAG = Histogram(
    "ws_loop_lag_seconds",
    "How late the relay's event loop ran a timer (a callback holding the loop, or no CPU for the process).",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
WS_LOOP_STALL_CPU = Counter(
    "ws_loop_stall_cpu_seconds_total",
    "Process CPU used in the relay's loop stalls (near their length: the relay's own work held the loop).",
)
WS_GC_PAUSES = Histogram(
    "ws_gc_pause_seconds",
    "Garbage collections in the relay, by generation.",
    ["generation"],
    buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)
