"""Auto-pipelining of one Lua script on a Redis connection of its own, for a hot path (heartbeats).

Calls arriving within a short window are written to Redis in one write; their replies come back in order
and are matched to the callers as they are parsed (hiredis), so one caller's error stays its own. The window
only opens while an earlier write is still unanswered: a call to an idle connection goes out at the end of
the event loop's current pass (with whatever else that pass submits), so a lone call never waits for it.
This runs on a bare asyncio protocol rather than a redis-py pipeline: redis-py spends tens of microseconds
per batch on connection checkout, retry and timeout wrappers and per-command packing, which the heartbeat
can't afford (about 205 → 150 µs of server CPU per heartbeat, measured side by side under h2load).
Everything else uses the ordinary redis-py client. The connection is opened from the pooled client's
settings (host, port or unix path, password, database, TLS with the system's CAs); client certificates and
custom CAs are not supported here.

Failures: a lost connection fails the calls in flight, and each is sent once more on a fresh connection,
so the script must be safe to run twice (the heartbeat script is). A NOSCRIPT reply (Redis restarted and
lost its script cache) is answered by sending that call again as EVAL, which caches the script again. A
write still unanswered after the reply timeout (at most twice that) means Redis is hung: the connection is
dropped and its calls fail with a TimeoutError (not retried; the next calls open a new connection).
Both bounds come from the pooled client's `socket_connect_timeout` and `socket_timeout` (REDIS_TIMEOUT_SECONDS
in the server): the watchdog fires after half the reply bound, so a hung Redis fails a call within it.

Against a Redis Cluster (a `RedisCluster` client) each call goes to the master of its first key's slot, as
redis-py's slot map says: one batching lane (window, connection) per master, so a pipelined write never
mixes nodes, and replies still come back in order per connection. The script's keys must share that slot
(hash tags). A call the cluster answers with a redirection (MOVED / ASK while slots move, TRYAGAIN,
CLUSTERDOWN) or whose connection is lost is run once more through the cluster client itself, which follows
the redirection, refreshes the slot map (the next calls use the new master) and loads the script if need be.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from hashlib import sha1
from typing import Any

import hiredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.core.redis import RedisClient

DEFAULT_TIMEOUT_SECONDS = 5.0  # a client made without socket timeouts


class RespConnection(asyncio.Protocol):
    """One pipelined RESP connection: writes go out as given, replies resolve waiters in order."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._waiters: deque[asyncio.Future] = deque()
        self._transport: asyncio.Transport | None = None
        self.lost = False
        self._sent = 0  # commands written so far
        self._answered = 0  # replies read so far
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader, waiters = self._reader, self._waiters
        reader.feed(data)
        reply = reader.gets()
        while reply is not False:
            self._answered += 1
            waiter = waiters.popleft()
            if not waiter.done():  # its caller may have been cancelled (deadline)
                waiter.set_result(reply)
            reply = reader.gets()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError("connection to Redis lost"))
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _fail(self, error: Exception) -> None:
        self.lost = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    @property
    def busy(self) -> bool:
        """True while a command written on this connection is still unanswered (a lost connection's
        were failed: it is not busy, and the next call goes out at once on a new one)."""
        return not self.lost and self._answered < self._sent

    def send(self, payload: bytes, waiters: list[asyncio.Future]) -> None:
        self._waiters.extend(waiters)
        self._sent += len(waiters)
        assert self._transport is not None
        self._transport.write(payload)

    def watch(self, timeout: float) -> None:
        """Arms the reply watchdog unless it is armed already: one timer per connection, not per write.
        A command unanswered for between `timeout` and twice that drops the connection (Redis is hung)."""
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(timeout, self._check, self._sent, timeout)

    def _check(self, sent: int, timeout: float) -> None:
        self._watchdog = None
        if self.lost:
            return
        if self._answered < sent:
            self._fail(RedisTimeoutError(f"no reply from Redis within {timeout:g} s"))
            assert self._transport is not None
            self._transport.abort()
        elif self._answered < self._sent:  # written since the watchdog was armed: watch those
            self.watch(timeout)

    async def call(self, payload: bytes) -> Any:
        waiter = asyncio.get_running_loop().create_future()
        self.send(payload, [waiter])
        reply = await waiter
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_resp(
    address: dict[str, Any],
    connection_class: type,
    factory: Callable[[], RespConnection] = RespConnection,
) -> RespConnection:
    """A RESP connection (made by `factory`) to the server of `address` (a redis-py connection's kwargs and
    class: the pool's, or a cluster node's), AUTH and SELECT done. The caller bounds the time it takes."""
    loop = asyncio.get_running_loop()
    if issubclass(connection_class, UnixDomainSocketConnection):
        _, connection = await loop.create_unix_connection(factory, address["path"])
    else:
        tls = ssl.create_default_context() if issubclass(connection_class, SSLConnection) else None
        host = address.get("host", "localhost")
        _, connection = await loop.create_connection(
            factory, host, address.get("port", 6379), ssl=tls, server_hostname=host if tls else None
        )
    try:
        if address.get("password"):
            credentials = [address["username"]] if address.get("username") else []
            await connection.call(hiredis.pack_command((b"AUTH", *credentials, address["password"])))
        if address.get("db"):
            await connection.call(hiredis.pack_command((b"SELECT", address["db"])))
    except BaseException:
        connection.close()
        raise
    return connection


class _Lane:
    """Calls to one Redis server: what arrives within the window goes out in one write on one connection.
    The window opens only while the connection has a write in flight (see the module docstring)."""

    def __init__(
        self,
        address: dict[str, Any],
        connection_class: type,
        *,
        window_seconds: float,
        max_batch: int,
        reply_timeout_seconds: float | None,
    ):
        self._address = address
        if reply_timeout_seconds is None:  # the watchdog fails a call between 1 and 2 times its timeout
            reply_timeout_seconds = (address.get("socket_timeout") or DEFAULT_TIMEOUT_SECONDS) / 2
        self._connect_timeout = address.get("socket_connect_timeout") or DEFAULT_TIMEOUT_SECONDS
        self._connection_class = connection_class
        self._window = window_seconds
        self._max_batch = max_batch
        self._reply_timeout = reply_timeout_seconds
        self._payloads: list[bytes] = []
        self._waiters: list[asyncio.Future] = []
        self._timer: asyncio.Handle | None = None
        self._connection: RespConnection | None = None
        self._connecting = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    def submit(self, payload: bytes) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._payloads.append(payload)
        self._waiters.append(waiter)
        if len(self._waiters) >= self._max_batch:
            self._flush()
        elif self._timer is None:
            if self._connection is not None and self._connection.busy:
                self._timer = loop.call_later(self._window, self._flush)
            else:
                self._timer = loop.call_soon(self._flush)
        return waiter

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        payload, waiters = b"".join(self._payloads), self._waiters
        self._payloads, self._waiters = [], []
        connection = self._connection
        if connection is not None and not connection.lost:
            self._send(connection, payload, waiters)
            return
        task = asyncio.create_task(self._send_when_connected(payload, waiters))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_when_connected(self, payload: bytes, waiters: list[asyncio.Future]) -> None:
        try:
            connection = await self._connect()
        except (OSError, TimeoutError, RedisConnectionError, ResponseError) as error:
            failure = RedisConnectionError(f"cannot connect to Redis: {error}")
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(failure)
            return
        self._send(connection, payload, waiters)

    def _send(self, connection: RespConnection, payload: bytes, waiters: list[asyncio.Future]) -> None:
        connection.send(payload, waiters)
        connection.watch(self._reply_timeout)

    async def _connect(self) -> RespConnection:
        """The live connection, or a new one (AUTH and SELECT done) when there is none."""
        async with self._connecting:
            if self._connection is not None and not self._connection.lost:
                return self._connection
            # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation that arrives as the
            # connection opens, and the cancelled caller would carry on as if never cancelled
            async with asyncio.timeout(self._connect_timeout):
                connection = await self._open()
            self._connection = connection
            return connection

    async def _open(self) -> RespConnection:
        return await open_resp(self._address, self._connection_class)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


_REDIRECTIONS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


class BatchedScript:
    """`await script(keys=[...], args=[...])` runs one Lua script; concurrent calls share a write."""

    def __init__(
        self,
        redis: RedisClient,
        source: str,
        *,
        window_seconds: float = 0.002,
        max_batch: int = 128,
        reply_timeout_seconds: float | None = None,
    ):
        self._source = source.encode()
        self._sha = sha1(self._source).hexdigest().encode()
        self._lane_options = {
            "window_seconds": window_seconds,
            "max_batch": max_batch,
            "reply_timeout_seconds": reply_timeout_seconds,
        }
        self._lane: _Lane | None = None  # the one lane of a plain Redis
        self._cluster: RedisCluster | None = None
        self._lanes: dict[str, _Lane] = {}  # a cluster's, by node name
        if isinstance(redis, RedisCluster):
            self._cluster = redis
            self._via_cluster = redis.register_script(source)
        else:
            pool = redis.connection_pool
            self._lane = _Lane(dict(pool.connection_kwargs), pool.connection_class, **self._lane_options)

    async def __call__(self, *, keys: Sequence[str], args: Sequence[Any]) -> Any:
        variable = (*keys, *args)
        evalsha = hiredis.pack_command((b"EVALSHA", self._sha, len(keys), *variable))
        return await self._run(evalsha, variable, len(keys), ())

    def prepare(self, keys: int, *tail: Any) -> PreparedScript:
        """Calls of this script with `keys` keys whose arguments always end in `tail` (settings): the
        constant part of the command is packed once, not per call."""
        return PreparedScript(self, keys, tail)

    async def _run(self, evalsha: bytes, variable: Sequence[Any], keys: int, tail: Sequence[Any]) -> Any:
        """Sends `evalsha`, the call of (`variable`: the `keys` keys, then the arguments before `tail`)."""
        lane = self._lane or await self._cluster_lane(variable[0])
        try:
            reply = await lane.submit(evalsha)
        except RedisConnectionError:
            if self._cluster is not None:  # failed over? the cluster client finds the new master
                return await self._via_cluster(keys=variable[:keys], args=(*variable[keys:], *tail))
            reply = await lane.submit(evalsha)
        if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
            reply = await lane.submit(hiredis.pack_command((b"EVAL", self._source, keys, *variable, *tail)))
        if isinstance(reply, ResponseError):
            if self._cluster is not None and str(reply).startswith(_REDIRECTIONS):
                return await self._via_cluster(keys=variable[:keys], args=(*variable[keys:], *tail))
            raise reply
        return reply

    async def _cluster_lane(self, key: str) -> _Lane:
        cluster = self._cluster
        assert cluster is not None
        nodes = cluster.nodes_manager
        if not nodes.slots_cache:
            await cluster.initialize()
        node = nodes.get_node_from_slot(key_slot(key.encode()))
        lane = self._lanes.get(node.name)
        if lane is None:
            lane = self._lanes[node.name] = _Lane(
                dict(node.connection_kwargs), node.connection_class, **self._lane_options
            )
        return lane

    def close(self) -> None:
        for lane in (self._lane, *self._lanes.values()):
            if lane is not None:
                lane.close()
        self._lanes.clear()


def _without_header(packed: bytes) -> bytes:
    """A packed command's arguments without its `*<count>` line."""
    return packed[packed.index(b"\n") + 1 :]


class PreparedScript:
    """`await prepared(*keys_and_args)` = `await script(keys=..., args=[*args, *tail])`, with the command's
    head (EVALSHA, the script's hash, the key count) and `tail` packed once. hiredis packs an argument in
    about 0.3 µs (an integer more), a heartbeat sends eleven: this halves that."""

    def __init__(self, script: BatchedScript, keys: int, tail: Sequence[Any]) -> None:
        self._script = script
        self._keys = keys
        self._tail = tuple(tail)
        self._count = 3 + len(self._tail)  # EVALSHA, hash, key count; then the variable part
        self._head = _without_header(hiredis.pack_command((b"EVALSHA", script._sha, keys)))
        self._packed_tail = _without_header(hiredis.pack_command(self._tail)) if self._tail else b""

    def __call__(self, *variable: Any) -> Awaitable[Any]:
        body = _without_header(hiredis.pack_command(variable))
        command = b"*%d\r\n%b%b%b" % (self._count + len(variable), self._head, body, self._packed_tail)
        return self._script._run(command, variable, self._keys, self._tail)
