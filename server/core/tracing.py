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
"""

from __future__ import annotations

from contextvars import ContextVar

import grpc
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from server.core.config import Settings

_traceparent: ContextVar[str] = ContextVar("traceparent", default="")
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None


def configure(settings: Settings) -> None:
    """Installs this process's tracer (once, at start)."""
    global _tracer, _provider
    sampler = ParentBased(TraceIdRatioBased(settings.otel_traces_sampler_arg))
    provider = TracerProvider(
        sampler=sampler, resource=Resource.create({"service.name": settings.otel_service_name})
    )
    if settings.otel_exporter_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_exporter_otlp_endpoint))
        )
    _provider = provider
    _tracer = provider.get_tracer("library.platform")


def shutdown() -> None:
    """Flushes spans still buffered for export."""
    if _provider is not None:
        _provider.shutdown()


def parse_traceparent(value: str) -> SpanContext | None:
    """The remote span context of a W3C `traceparent` (version 00), or None when it is not one."""
    parts = value.strip().split("-")
    if len(parts) != 4 or parts[0] != "00" or [len(p) for p in parts[1:]] != [32, 16, 2]:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 1))


def format_traceparent(context: SpanContext) -> str:
    """The W3C `traceparent` of a span context ("" for the invalid one of a tracer not configured)."""
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def start_span(name: str, traceparent: str, kind: SpanKind) -> tuple[trace.Span, object]:
    """Opens a span continuing `traceparent` (a new trace when empty or invalid) and makes it the current
    traceparent; returns (span, token for `end_span`)."""
    remote = parse_traceparent(traceparent) if traceparent else None
    parent = trace.set_span_in_context(NonRecordingSpan(remote)) if remote is not None else None
    span = _tracer.start_span(name, context=parent, kind=kind)
    return span, _traceparent.set(format_traceparent(span.get_span_context()))


def end_span(span: trace.Span, token, code: grpc.StatusCode | None = None) -> None:
    if code is not None and span.is_recording():
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()
    _traceparent.reset(token)


def current_traceparent() -> str:
    """The traceparent of the RPC or event being handled ("" outside one): what emitted events carry."""
    return _traceparent.get()
