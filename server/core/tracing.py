"""OpenTelemetry tracing (SPEC §9): a span per RPC and per consumed event, and the W3C `traceparent` that
events carry (CloudEvents distributed-tracing extension), so one trace runs from Envoy through the server
into the events a request causes and on through the consumers that handle them.

Sampling is `ParentBased(TraceIdRatioBased(OTEL_TRACES_SAMPLER_ARG))`: a caller's sampled flag (Envoy's
decision) is followed, new traces are sampled at the ratio. Export is off unless OTEL_EXPORTER_OTLP_ENDPOINT
is set (OTLP over gRPC, batched). An unsampled span still has a trace id, which events carry all the same:
the trace is continued even where it is not recorded.

The span's context is kept in a context variable of this module (`current_traceparent`), not attached as
OpenTelemetry's current context: nothing below the pipeline opens child spans, and attaching costs the hot
path for nothing.

Unsampled calls (most of them) never reach the SDK: an SDK span costs 20-40 µs even when it records
nothing, a tenth of a heartbeat. The sampling decision is made here first, by the rule the SDK's
`ParentBased(TraceIdRatioBased)` applies (a parent's flag; else the trace id's low 64 bits below the ratio's
bound); an unsampled call only draws a span id and keeps the ids, formatted into a traceparent only when an
event is written. A sampled one opens an SDK span, whose own sampler (`ParentBased(ALWAYS_ON)`) then keeps
the decision made here — when spans go anywhere: with no exporter configured (the default) a sampled call
takes the plain path too, keeping its sampled flag, so the events it causes carry the same traceparent as
they would with export on (an SDK span nobody exports cost the heartbeat ~8 µs per call on average at the
default ratio of 0.1).
"""

from __future__ import annotations

import random
import re
from contextvars import ContextVar
from typing import NamedTuple

import grpc
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from server.core.config import Settings

# The current call's span: its SDK span context when sampled, else the ids of an unsampled one.
_current: ContextVar[SpanContext | Traceparent | None] = ContextVar("traceparent", default=None)
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None
_recording = False  # whether sampled spans are exported (an OTLP endpoint is configured)
_TRACE_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT
_root_bound = 0  # a new trace is sampled when its id's low 64 bits are below this (TraceIdRatioBased's rule)


def configure(settings: Settings) -> None:
    """Installs this process's tracer (once, at start)."""
    global _tracer, _provider, _root_bound, _recording
    _root_bound = TraceIdRatioBased.get_bound_for_rate(settings.otel_traces_sampler_arg)
    provider = TracerProvider(
        sampler=ParentBased(ALWAYS_ON), resource=Resource.create({"service.name": settings.otel_service_name})
    )
    if settings.otel_exporter_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_exporter_otlp_endpoint))
        )
    _recording = bool(settings.otel_exporter_otlp_endpoint)
    _provider = provider
    _tracer = provider.get_tracer("library.platform")


def shutdown() -> None:
    """Flushes spans still buffered for export."""
    if _provider is not None:
        _provider.shutdown()


_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


class Traceparent(NamedTuple):
    """A parsed W3C `traceparent`: plain ints (an OpenTelemetry SpanContext costs ~10 µs to build, and only
    a sampled call needs one)."""

    trace_id: int
    span_id: int
    sampled: bool

    def header(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{int(self.sampled):02x}"


def parse_traceparent(value: str) -> Traceparent | None:
    """The W3C `traceparent` (version 00) of a header value, or None when it is not one."""
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    trace_id, span_id, flags = (int(part, 16) for part in match.groups())
    if not trace_id or not span_id:
        return None
    return Traceparent(trace_id, span_id, bool(flags & 1))


def format_traceparent(context: SpanContext) -> str:
    """The W3C `traceparent` of a span context ("" for the invalid one of a tracer not configured)."""
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _span_id() -> int:
    return random.getrandbits(64) or 1


def start_span(name: str, traceparent: str, kind: SpanKind) -> tuple[trace.Span | None, object]:
    """Opens a span continuing `traceparent` (a new trace when empty or invalid) and makes it the current
    one; returns (the SDK span, or None for a call that records none; token for `end_span`)."""
    remote = parse_traceparent(traceparent) if traceparent else None
    if remote is None:
        trace_id = random.getrandbits(128) or 1
        sampled = (trace_id & _TRACE_ID_LIMIT) < _root_bound
        parent = None
    else:
        trace_id, parent_id, sampled = remote
    if not sampled or not _recording:
        return None, _current.set(Traceparent(trace_id, _span_id(), sampled))
    if remote is not None:
        flags = TraceFlags(TraceFlags.SAMPLED)
        parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(trace_id, parent_id, True, flags)))
    span = _tracer.start_span(name, context=parent, kind=kind)
    return span, _current.set(span.get_span_context())


def end_span(span: trace.Span | None, token, code: grpc.StatusCode | None = None) -> None:
    if span is not None:
        if code is not None:
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()
    _current.reset(token)


def current_traceparent() -> str:
    """The traceparent of the RPC or event being handled ("" outside one): what emitted events carry."""
    current = _current.get()
    if current is None:
        return ""
    if isinstance(current, Traceparent):
        return current.header()
    return format_traceparent(current)
