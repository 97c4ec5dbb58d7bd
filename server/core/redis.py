"""Redis client factory (redis.asyncio); one pool per process.

The pool blocks (up to `timeout`) when all its connections are busy instead of failing the call: under a
burst of concurrent RPCs a caller waits a moment for a connection rather than getting an error.

A command that finds its pooled connection dead (Redis restarted or failed over since the connection was
last used) is retried on a fresh one, a few times with a short backoff: without this the first command on
every stale connection would fail. Everything sent through this client is safe to send twice.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

RETRIES = 3


def create_redis(url: str, *, max_connections: int = 64, timeout: float = 5.0) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), RETRIES),
    )
    return Redis(connection_pool=pool)
