"""`python -m gateway`: serve the WebSocket relay until SIGTERM/SIGINT, then close connections with 1001."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import sys

import uvloop
from prometheus_client import start_http_server

from gateway.app import Gateway
from gateway.heap import HeapKeeper
from gateway.loop_probe import LoopProbe
from server.core.auth import TokenVerifier
from server.core.config import ConfigurationError, Settings
from server.core.logs import configure_logging
from server.core.redis import redis_from_settings

log = logging.getLogger("gateway")


def raise_open_file_limit(wanted: int) -> None:
    """Every socket is a file descriptor: lift the soft limit to the hard one, and say when even that is
    short of WS_MAX_CONNECTIONS (plus a margin for Redis, metrics and the listener)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        soft = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft < wanted:
        log.warning(
            "open-file limit below WS_MAX_CONNECTIONS: handshakes may fail with EMFILE first",
            extra={"nofile": soft, "wanted": wanted},
        )


async def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    raise_open_file_limit(settings.ws_max_connections + 256)
    verifier = TokenVerifier.from_settings(settings)
    # a burst of handshakes or closes queues for the pool rather than failing (503) after 5 s
    redis = redis_from_settings(settings, max_connections=settings.ws_redis_pool_size, timeout=30.0)
    gateway = Gateway(settings, verifier, redis)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if settings.ws_metrics_port:
        start_http_server(settings.ws_metrics_port, addr=settings.ws_host)
    await gateway.start()
    heap = HeapKeeper()  # this process only (not the tests' in-process relays): gc.freeze is process-wide
    heap.start()
    probe = LoopProbe()  # likewise: gc.callbacks are process-wide
    probe.start()
    try:
        await stop.wait()
    finally:
        probe.stop()
        await heap.stop()
        await gateway.stop(settings.shutdown_grace_seconds)
        await redis.aclose()


if __name__ == "__main__":
    try:
        uvloop.run(main())
    except ConfigurationError as error:
        sys.exit(f"gateway: configuration error: {error}")
