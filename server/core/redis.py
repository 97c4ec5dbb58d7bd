"""Redis client factory (redis.asyncio); one pool per process.

The pool blocks (up to `timeout`) when all its connections are busy instead of failing the call: under a
burst of concurrent RPCs a caller waits a moment for a connection rather than getting an error.

A command that finds its pooled connection dead (Redis restarted or failed over since the connection was
last used) is retried on a fresh one, a few times with a short backoff: without this the first command on
every stale connection would fail. Everything sent through this client is safe to send twice.

A command that gets no reply within `timeout` (Redis hung: a stopped process still accepts connections
and reads, it just never answers) fails with a TimeoutError at once and is not retried, so a hung Redis
costs a call at most about `timeout`, never `timeout` once per retry.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

RETRIES = 3


def create_redis(url: str, *, max_connections: int = 64, timeout: float = 5.0) -> Redis:
    """`timeout` bounds connecting, each reply and the wait for a pooled connection (the server passes
    REDIS_TIMEOUT_SECONDS; the WebSocket relay keeps the default, above its XREAD BLOCK time)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry=Retry(
            ExponentialWithJitterBackoff(base=0.01, cap=0.5),
            RETRIES,
            supported_errors=(RedisConnectionError,),
        ),
    )
    return Redis(connection_pool=pool)
