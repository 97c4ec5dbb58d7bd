"""One server interceptor for every unary call: request id, authentication, error mapping, access log and
metrics. One wrapper instead of four keeps the per-call overhead on hot paths (heartbeats) small.
"""

from __future__ import annotations

import logging
import time
import uuid

import grpc
from grpc_status import rpc_status

from server.core import auth, context, metrics
from server.core.errors import DomainError, Unauthenticated, Unimplemented, internal_status

log = logging.getLogger("access")

# Methods anyone may call: health checks and reflection.
PUBLIC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


async def abort_with(ctx: grpc.aio.ServicerContext, error: DomainError) -> None:
    status = rpc_status.to_status(error.to_status())
    await ctx.abort(status.code, status.details, status.trailing_metadata)


class CallInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, verifier: auth.TokenVerifier):
        self._verifier = verifier
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or method.startswith(PUBLIC_PREFIXES):
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, behavior):
        latency = metrics.RPC_LATENCY.labels(method)
        verifier = self._verifier

        async def call(request, ctx: grpc.aio.ServicerContext):
            started = time.perf_counter()
            metadata = ctx.invocation_metadata() or ()
            request_id = next((v for k, v in metadata if k == "x-request-id"), "") or uuid.uuid4().hex
            rid_token = context.request_id.set(str(request_id))
            principal = None
            code = grpc.StatusCode.OK
            principal_token = None
            try:
                token = auth.bearer_token(metadata)
                if token is None:
                    raise Unauthenticated("missing bearer token")
                principal = verifier.verify(token)
                principal_token = auth.set_current_principal(principal)
                return await behavior(request, ctx)
            except DomainError as error:
                code = error.code
                await abort_with(ctx, error)
            except NotImplementedError:
                code = grpc.StatusCode.UNIMPLEMENTED
                await abort_with(ctx, Unimplemented("this method is not implemented yet"))
            except grpc.aio.AbortError:
                code = ctx.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error", extra={"request_id": request_id, "method": method})
                status = rpc_status.to_status(internal_status())
                await ctx.abort(status.code, status.details, status.trailing_metadata)
            finally:
                elapsed = time.perf_counter() - started
                latency.observe(elapsed)
                metrics.RPC_HANDLED.labels(method, code.name).inc()
                if log.isEnabledFor(logging.INFO):
                    log.info(
                        "rpc",
                        extra={
                            "request_id": request_id,
                            "user_id": principal.subject if principal else None,
                            "method": method,
                            "code": code.name,
                            "duration_ms": round(elapsed * 1000, 3),
                        },
                    )
                if principal_token is not None:
                    auth.reset_current_principal(principal_token)
                context.request_id.reset(rid_token)

        return call
