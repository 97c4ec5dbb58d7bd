"""What every RPC of the v1 services goes through: request id, authentication, the contract's field rules,
error mapping, access log and metrics.

`PipelineInterceptor` applies it as the server's grpc.aio interceptor (the design card's
`grpc-interceptor` shape). It wraps each method of the v1 services once, when it is built, and per call
only looks the wrapped handler up: measured against wrapping at registration (scripts/bench/interceptor.py,
docs/ARCHITECTURE.md), the interceptor's own cost is inside the bench's noise. Health and reflection pass
through unwrapped: anyone may call them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Iterable

import grpc
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from grpc_status import rpc_status
from opentelemetry.trace import SpanKind

from server.core import auth, context, metrics, tracing
from server.core.contract_rules import ContractRules
from server.core.errors import (
    DomainError,
    InvalidArgument,
    Unimplemented,
    dependency_unavailable,
    internal_status,
    malformed_request,
)
from server.core.method_table import MALFORMED, MethodTable, tolerant
from server.core.rate_limit import RateLimiter

log = logging.getLogger("access")
_INTERNAL = rpc_status.to_status(internal_status())  # the same generic answer for anything unexpected


async def abort_with(ctx: grpc.aio.ServicerContext, error: DomainError) -> None:
    status = rpc_status.to_status(error.to_status())
    if error.trailing_metadata:
        status = status._replace(trailing_metadata=(*status.trailing_metadata, *error.trailing_metadata))
    await ctx.abort_with_status(status)


async def _within_deadline(call, remaining: float):
    """Runs a servicer call so that it answers before the client's deadline: a little earlier (a tenth of
    the time, at most 0.1 s), so a dependency that hangs makes the client hear UNAVAILABLE (the TimeoutError
    maps to it) rather than DEADLINE_EXCEEDED. Dependency clients bound their own waits by the same time
    (context.answer_by)."""
    answer_by = time.monotonic() + remaining - min(0.1, remaining / 10)
    token = context.answer_by.set(answer_by)
    try:
        async with asyncio.timeout_at(asyncio.get_running_loop().time() + answer_by - time.monotonic()):
            return await call
    finally:
        context.answer_by.reset(token)


def _read_metadata(metadata) -> tuple[str, str, str]:
    """(authorization, x-request-id, traceparent) in one pass over the call's metadata."""
    authorization = request_id = traceparent = ""
    for key, value in metadata or ():
        if key == "authorization":
            authorization = value
        elif key == "x-request-id":
            request_id = value
        elif key == "traceparent":
            traceparent = value
    return authorization, request_id, traceparent


class CallPipeline:
    def __init__(self, verifier: auth.TokenVerifier, limiter: RateLimiter | None = None):
        self._verifier = verifier
        self._limiter = limiter
        self._rules = ContractRules()

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler, request_type: Descriptor):
        """A registered unary handler behind the pipeline, with a deserializer that never raises (bytes that
        do not parse become MALFORMED, answered as VALIDATION_FAILED)."""
        return handler._replace(
            unary_unary=self.wrap(method, handler.unary_unary, request_type),
            request_deserializer=tolerant(handler.request_deserializer),
        )

    def wrap(self, method: str, behavior, request_type: Descriptor | None = None):
        """`behavior` behind the pipeline. The contract's rules for `request_type` are compiled here, once
        (an annotation the compiler does not support fails the start)."""
        check = self._rules.check_for(request_type) if request_type is not None else None
        if self._limiter is not None:
            behavior = self._limiter.guard(method, behavior)  # unchanged unless `method` has a limit
        stats = metrics.RPCS.of(method)
        verifier = self._verifier
        is_async = inspect.iscoroutinefunction(behavior)

        async def call(request, ctx: grpc.aio.ServicerContext):
            started = time.perf_counter()
            authorization, request_id, traceparent = _read_metadata(ctx.invocation_metadata())
            rid_token = context.request_id.set(request_id)
            span, span_token = tracing.start_span(method, traceparent, SpanKind.SERVER)
            principal = None
            principal_token = None
            code = grpc.StatusCode.OK
            try:
                principal = verifier.cached_header(authorization) or await verifier.authenticate_header(
                    authorization
                )
                principal_token = auth.set_current_principal(principal)
                if request is MALFORMED:
                    raise malformed_request()
                if check is not None and (violations := check(request)):
                    raise InvalidArgument(violations)
                if not is_async:
                    return behavior(request, ctx)
                remaining = ctx.time_remaining()
                if remaining is None:
                    return await behavior(request, ctx)
                return await _within_deadline(behavior(request, ctx), remaining)
            except DomainError as error:
                code = error.code
                await abort_with(ctx, error)
            except NotImplementedError:  # a generated base servicer: the capability is not built yet
                code = grpc.StatusCode.UNIMPLEMENTED
                await abort_with(ctx, Unimplemented("this method is not implemented yet"))
            except grpc.aio.AbortError:
                code = ctx.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:  # the client went away or its deadline passed
                remaining = ctx.time_remaining()
                expired = remaining is not None and remaining <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                raise
            except Exception as error:
                unavailable = dependency_unavailable(error)
                extra = {"request_id": context.current_request_id(), "method": method}
                if unavailable is None:
                    code = grpc.StatusCode.INTERNAL
                    log.exception("unhandled error", extra=extra)
                    await ctx.abort_with_status(_INTERNAL)
                else:
                    code = unavailable.code
                    log.warning("dependency unavailable: %r", error, extra=extra)
                    await abort_with(ctx, unavailable)
            finally:
                elapsed = time.perf_counter() - started
                stats.observe(elapsed, code)
                if log.isEnabledFor(logging.INFO):
                    log.info(
                        "rpc",
                        extra={
                            "request_id": context.current_request_id(),
                            "user_id": principal.subject if principal else None,
                            "method": method,
                            "code": code.name,
                            "duration_ms": round(elapsed * 1000, 3),
                        },
                    )
                if principal_token is not None:
                    auth.reset_current_principal(principal_token)
                tracing.end_span(span, span_token, code)
                context.request_id.reset(rid_token)

        return call


class PipelineInterceptor(grpc.aio.ServerInterceptor):
    """The call pipeline around every method of `services`, as the server's interceptor. The wrapped
    handlers are built here, at start (so a contract rule the compiler does not support fails the start);
    a call only looks its handler up. Other methods pass through as registered."""

    def __init__(self, pipeline: CallPipeline, methods: MethodTable, services: Iterable[ServiceDescriptor]):
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}
        for service in services:
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                self._wrapped[path] = pipeline.wrap_handler(path, methods.handler(path), method.input_type)

    async def intercept_service(self, continuation, handler_call_details):
        wrapped = self._wrapped.get(handler_call_details.method)
        return wrapped if wrapped is not None else await continuation(handler_call_details)
