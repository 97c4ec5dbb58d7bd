"""`python -m gateway`: serve the WebSocket relay until SIGTERM/SIGINT, then close connections with 1001."""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop
from prometheus_client import start_http_server

from gateway.app import Gateway
from server.core.auth import TokenVerifier
from server.core.config import ConfigurationError, Settings
from server.core.logs import configure_logging
from server.core.redis import create_redis


async def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    verifier = TokenVerifier.from_settings(settings)
    redis = create_redis(settings.redis_url, max_connections=settings.ws_redis_pool_size)
    gateway = Gateway(settings, verifier, redis)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if settings.ws_metrics_port:
        start_http_server(settings.ws_metrics_port, addr=settings.ws_host)
    await gateway.start()
    try:
        await stop.wait()
    finally:
        await gateway.stop(settings.shutdown_grace_seconds)
        await redis.aclose()


if __name__ == "__main__":
    try:
        uvloop.run(main())
    except ConfigurationError as error:
        sys.exit(f"gateway: configuration error: {error}")
