"""Redis client factory (redis.asyncio); one pool per process.

The pool blocks (up to `timeout`) when all its connections are busy instead of failing the call: under a
burst of concurrent RPCs a caller waits a moment for a connection rather than getting an error.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis


def create_redis(url: str, *, max_connections: int = 64, timeout: float = 5.0) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, socket_timeout=5, health_check_interval=30
    )
    return Redis(connection_pool=pool)
