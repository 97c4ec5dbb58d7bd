"""Every RPC method of the server behind one generic handler, so that accepting a call costs the same
however many methods the server has.

grpc.aio keeps one pending "request call" future per *registered* method and runs `asyncio.wait` over all
of them each time a call arrives, so its per-call cost grows with the number of registered methods (over
forty here, which cost the heartbeat tens of microseconds per call, measured with `make bench`). The
generated `add_*Servicer_to_server` functions register both ways; a `MethodTable` stands in for the server
in those calls and keeps only a path → handler dict, which the server consults as one generic handler: one
dict lookup per call.

`tolerant` makes request parsing total for the methods behind the call pipeline: grpc.aio answers a
deserializer's exception with UNKNOWN (and the parser's text), so those methods get a deserializer that
returns `MALFORMED` instead, which the pipeline answers as INVALID_ARGUMENT VALIDATION_FAILED.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

# What a tolerant deserializer returns for bytes that do not parse as the method's request type.
MALFORMED = object()


def tolerant(parse: Callable[[bytes], object]) -> Callable[[bytes], object]:
    def parse_or_malformed(data: bytes) -> object:
        try:
            return parse(data)
        except Exception:  # DecodeError, invalid UTF-8, ...: the client's bytes, whatever the parser says
            return MALFORMED

    return parse_or_malformed


class MethodTable(grpc.GenericRpcHandler):
    """A generic handler, and what generated `add_*_to_server` functions take as the server."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)

    def handler(self, method: str) -> grpc.RpcMethodHandler:
        """The handler registered for `/package.Service/Method`."""
        return self._handlers[method]

    def add_registered_method_handlers(self, service: str, method_handlers: dict) -> None:
        for name, handler in method_handlers.items():
            self._handlers[f"/{service}/{name}"] = handler

    def add_generic_rpc_handlers(self, handlers) -> None:
        """Ignored: generated code passes the same handlers to add_registered_method_handlers too."""
