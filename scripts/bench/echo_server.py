"""The benchmark's baseline: a bare grpc.aio unary echo server (SPEC §10).

Same runtime as the service (grpc.aio on uvloop, one process), but nothing else: a generic handler with
raw bytes in and out (no protobuf parsing, no interceptor, no auth, no logging), so the ratio
service / echo measures what the service adds on top of grpc.aio itself.

Usage: python scripts/bench/echo_server.py [--host 127.0.0.1] [--port 50070]
Method: /bench.Echo/Echo (any other method is UNIMPLEMENTED).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
import uvloop

METHOD = "Echo"
SERVICE = "bench.Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


def _identity(data: bytes) -> bytes:
    return data


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 8 * 1024 * 1024)],
    )
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            METHOD: grpc.unary_unary_rpc_method_handler(
                _echo, request_deserializer=_identity, response_serializer=_identity
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"echo server on {host}:{port} /{SERVICE}/{METHOD}", flush=True)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50070)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
