"""Redis client factory (redis.asyncio); one pool per process, against one Redis or a Redis Cluster.

The pool blocks (up to `timeout`) when all its connections are busy instead of failing the call: under a
burst of concurrent RPCs a caller waits a moment for a connection rather than getting an error.

A command that finds its pooled connection dead (Redis restarted or failed over since the connection was
last used) is retried on a fresh one, a few times with a short backoff: without this the first command on
every stale connection would fail. Everything sent through this client is safe to send twice.

A command that gets no reply within `timeout` (Redis hung: a stopped process still accepts connections
and reads, it just never answers) fails with a TimeoutError at once and is not retried, so a hung Redis
costs a call at most about `timeout`, never `timeout` once per retry.

Cluster mode (REDIS_MODE=cluster, REDIS_URL naming any node): a `RedisCluster`, which learns the slot map
from that node and sends each command to the master of its key's slot (following MOVED / ASK); callers
wait for one of `max_connections` calls in flight, as with the blocking pool (WaitingRedisCluster). The
cluster rule every caller keeps (docs/ARCHITECTURE.md): the keys of one script call, one MULTI/EXEC or
one multi-key command share a hash tag (one slot); pipelines may mix slots (redis-py sends one
sub-pipeline per node). redis-py's cluster client retries a reply timeout once on a freshly resolved node
(it cannot tell a hung master from a failed-over one), so a hung node costs a call up to twice `timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

from server.core.config import ConfigurationError, Settings

RETRIES = 3
CLUSTER_RETRIES = 1
MODES = ("single", "cluster")

SUBSCRIBER_HEADROOM = 8  # connections per node beyond the calls' (pub/sub subscribers hold one each)
_holding: ContextVar[bool] = ContextVar("holding_a_redis_slot", default=False)


class WaitingRedisCluster(RedisCluster):
    """A RedisCluster whose callers wait for a connection (up to the timeout), as the single client's
    blocking pool makes them: redis-py's cluster nodes refuse with MaxConnectionsError at once when their
    pool is used up. At most `calls` commands and pipeline executions run at a time, each holding at most
    one connection per node, so no node's pool runs out (it has SUBSCRIBER_HEADROOM more, for subscribers).
    A call made while one is held (redis-py re-sends a pipeline's redirected commands one by one) does not
    wait again."""

    _calls: asyncio.Semaphore | None = None
    _wait_seconds = 0.0

    def bound_waits(self, calls: int, wait_seconds: float) -> None:
        self._calls = asyncio.Semaphore(calls)
        self._wait_seconds = wait_seconds

    @contextlib.asynccontextmanager
    async def _slot(self):
        if self._calls is None or _holding.get():
            yield
            return
        try:
            if self._calls.locked():  # asyncio.timeout: wait_for (3.11) may drop a cancellation here
                async with asyncio.timeout(self._wait_seconds):
                    await self._calls.acquire()
            else:  # free: no timer, no task
                await self._calls.acquire()
        except TimeoutError:
            raise MaxConnectionsError(f"no Redis connection free within {self._wait_seconds:g} s") from None
        token = _holding.set(True)
        try:
            yield
        finally:
            _holding.reset(token)
            self._calls.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._slot():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def waiting_execute(*args: Any, **kwargs: Any) -> list[Any]:
            async with self._slot():
                return await execute(*args, **kwargs)

        pipe.execute = waiting_execute  # type: ignore[method-assign]
        return pipe


RedisClient = Redis | RedisCluster


def create_redis(
    url: str, *, cluster: bool = False, max_connections: int = 64, timeout: float = 5.0
) -> RedisClient:
    """`timeout` bounds connecting, each reply and the wait for a pooled connection (the server passes
    REDIS_TIMEOUT_SECONDS; the WebSocket relay keeps the default, above its XREAD BLOCK time)."""
    backoff = ExponentialWithJitterBackoff(base=0.01, cap=0.5)
    if cluster:
        client = WaitingRedisCluster.from_url(
            url,
            max_connections=max_connections + SUBSCRIBER_HEADROOM,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
            retry=Retry(backoff, CLUSTER_RETRIES),
        )
        client.bound_waits(max_connections, timeout)
        return client
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry=Retry(backoff, RETRIES, supported_errors=(RedisConnectionError,)),
    )
    return Redis(connection_pool=pool)


def redis_from_settings(
    settings: Settings, *, max_connections: int | None = None, timeout: float | None = None
) -> RedisClient:
    """The client the settings describe (REDIS_URL, REDIS_MODE, REDIS_POOL_SIZE, REDIS_TIMEOUT_SECONDS)."""
    return create_redis(
        settings.redis_url,
        cluster=is_cluster_mode(settings.redis_mode),
        max_connections=settings.redis_pool_size if max_connections is None else max_connections,
        timeout=settings.redis_timeout_seconds if timeout is None else timeout,
    )


def is_cluster_mode(mode: str) -> bool:
    if mode not in MODES:
        raise ConfigurationError(f"REDIS_MODE must be one of {', '.join(MODES)}, not {mode!r}")
    return mode == "cluster"


def queue_script(
    pipe: Pipeline | ClusterPipeline,
    script: AsyncScript,
    keys: Sequence[Any],
    args: Sequence[Any],
    *,
    loaded: bool = False,
) -> None:
    """Queues one call of `script` on a pipeline. A plain pipeline loads its scripts before it runs them
    (redis-py's `Pipeline.scripts`: a SCRIPT EXISTS round trip first) unless the caller knows the script
    is `loaded` (a NOSCRIPT answer then says otherwise); a cluster pipeline does not, and a node that has
    not seen the script would answer NOSCRIPT, so there it goes as EVAL (which the node also caches)."""
    if isinstance(pipe, ClusterPipeline):
        pipe.eval(script.script, len(keys), *keys, *args)
    else:
        if not loaded:
            pipe.scripts.add(script)
        pipe.evalsha(script.sha, len(keys), *keys, *args)


async def mget(redis: RedisClient, keys: Sequence[str]) -> list[Any]:
    """MGET of keys that need not share a slot (in a cluster: one MGET per slot, redis-py's
    `mget_nonatomic`); the values in the order of `keys`."""
    if isinstance(redis, RedisCluster):
        return await redis.mget_nonatomic(keys)
    return await redis.mget(keys)


def keyspace_db(redis: RedisClient) -> int:
    """The database keyspace channels name (`__keyspace@<db>__:`): a cluster has only database 0."""
    if isinstance(redis, RedisCluster):
        return 0
    return int(redis.connection_pool.connection_kwargs.get("db", 0))


async def primaries(redis: RedisClient, *, refresh: bool = False) -> list[RedisClient | ClusterNode]:
    """What node-local state (CONFIG, keyspace notifications) must be looked at on: the client itself for
    one Redis, every master of a cluster (as its slot map says now; `refresh`: read the map again first,
    which a failover or a reshard changes)."""
    if isinstance(redis, RedisCluster):
        if refresh:
            await redis.nodes_manager.initialize()
        else:
            await redis.initialize()
        return list(redis.get_primaries())
    return [redis]


def node_name(node: RedisClient | ClusterNode) -> str:
    """A node of `primaries` by name: host:port in a cluster."""
    return node.name if isinstance(node, ClusterNode) else "redis"


def node_address(node: RedisClient | ClusterNode) -> tuple[dict[str, Any], type]:
    """The connection settings and class of `node` (one of `primaries(redis)`), for a connection of one's
    own to it (server.core.redis_batching.open_resp)."""
    if isinstance(node, ClusterNode):
        return dict(node.connection_kwargs), node.connection_class
    pool = node.connection_pool
    return dict(pool.connection_kwargs), pool.connection_class


async def config_get(redis: RedisClient, node: RedisClient | ClusterNode, name: str) -> str:
    if isinstance(node, ClusterNode):
        reply = await redis.config_get(name, target_nodes=node)
    else:
        reply = await node.config_get(name)
    value = reply.get(name, "")
    return value.decode() if isinstance(value, bytes) else value


async def config_set(redis: RedisClient, node: RedisClient | ClusterNode, name: str, value: str) -> None:
    if isinstance(node, ClusterNode):
        await redis.config_set(name, value, target_nodes=node)
    else:
        await node.config_set(name, value)
