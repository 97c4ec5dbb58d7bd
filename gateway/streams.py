"""Redis side of the relay: the user's notification stream, its change feed and the per-user connection slots.

All state lives in Redis, so any gateway instance can serve any user:
- `notifications:{<user>}` (server.core.uow.notification_stream) is the stream the outbox relay XADDs to.
  Connections read it with plain (non-blocking) XRANGE from their own cursor, through a small shared pool,
  the reads of many connections in one pipeline (CoalescedRanges): no connection holds a Redis connection
  while it waits.
- Redis keyspace notifications (`notify-keyspace-events` with K and t) announce every XADD on
  `__keyspace@<db>__:notifications:{<user>}`; each gateway process has one subscriber for them (one per
  master of a Redis Cluster: notifications are node-local) (gateway.hub), which tells the user's
  connections to read.
- `notifications:{<user>}:connections` is a sorted set of the user's open connections (member = connection
  id, score = expiry in Redis server milliseconds). Instances refresh their members while connected, so a
  crashed instance's connections stop counting after CONNECTION_TTL_MS.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence

from redis.asyncio.cluster import ClusterNode
from redis.exceptions import RedisError, ResponseError

from gateway.protocol import StreamId, format_stream_id, parse_stream_id
from server.core.config import ConfigurationError
from server.core.redis import RedisClient, config_get, config_set, primaries, queue_script
from server.core.uow import notification_stream

log = logging.getLogger(__name__)

CONNECTION_TTL_MS = 90_000
# Slots are refreshed this often: a refresh may be late or fail several times before one expires.
REFRESH_INTERVAL_SECONDS = CONNECTION_TTL_MS / 1000 / 6
READ_COUNT = 100
# Reads of the streams asked for while earlier ones are on the wire go to Redis together, in one pipeline
# of at most READ_BATCH commands; at most READS_IN_FLIGHT pipelines are out at a time.
READ_BATCH = 500
READS_IN_FLIGHT = 4
# Slots are refreshed (and released) in pipelines of this many: one huge pipeline parses all replies in one
# go and stalls the event loop (~30 ms for 10,000 connections); the relay spreads the batches over the
# refresh interval (gateway.app).
REFRESH_BATCH = 100
# The keyspace-notification classes the hub needs: K (keyspace channels) and t (stream commands).
KEYSPACE_FLAGS = "Kt"

Entry = tuple[str, dict[bytes, bytes]]

_NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# A handshake's one round trip. KEYS[1] connections zset, KEYS[2] the stream (one slot: same hash tag);
# ARGV: cap, connection id, ttl ms → {1 admitted | 0 over the cap, id of the stream's newest entry or ''}.
_OPEN = (
    _NOW_MS
    + """
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local id = ''
if newest[1] then id = newest[1][1] end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[2]) == false
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return {0, id}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return {1, id}
"""
)

# KEYS[1] connections zset; ARGV: connection id, ttl ms. Only extends a member that is still there.
_REFRESH = (
    _NOW_MS
    + """
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 1
"""
)


def connections_key(user_id: str) -> str:
    return f"{notification_stream(user_id)}:connections"


def open_keys(user_id: str) -> list[str]:
    """The keys of a handshake's script (_OPEN): the user's slots and stream, one hash tag."""
    return [connections_key(user_id), notification_stream(user_id)]


def keyspace_prefix(db: int) -> str:
    """Keyspace channels of the notification streams are this prefix + user id + `}`."""
    return f"__keyspace@{db}__:{notification_stream('')[:-1]}"


def keyspace_pattern(db: int) -> str:
    return keyspace_prefix(db) + "*}"


async def ensure_keyspace_events(redis: RedisClient) -> None:
    """Turns on the keyspace notifications the hub relies on (keeping flags others set), on every master
    of a cluster (they are node-local); refuses to start when Redis does not allow CONFIG and they are off
    (managed Redis: set them in its parameter group)."""
    for node in await primaries(redis):
        await ensure_keyspace_events_on(redis, node)


async def ensure_keyspace_events_on(redis: RedisClient, node: RedisClient | ClusterNode) -> None:
    name = "notify-keyspace-events"
    try:
        current = await config_get(redis, node, name)
    except ResponseError as exc:
        raise ConfigurationError(
            f"cannot read notify-keyspace-events ({exc}); configure Redis with "
            f"notify-keyspace-events containing {KEYSPACE_FLAGS!r}"
        ) from None
    # A (all classes) includes t; K must be there in any case.
    if "K" in current and ("t" in current or "A" in current):
        return
    wanted = current + "".join(flag for flag in KEYSPACE_FLAGS if flag not in current)
    try:
        await config_set(redis, node, name, wanted)
    except RedisError as exc:
        raise ConfigurationError(
            f"Redis has notify-keyspace-events={current!r} and refused to add {KEYSPACE_FLAGS!r} ({exc})"
        ) from None


class CoalescedRanges:
    """XRANGE for the relay's many connections: the reads asked for in one turn of the event loop (a burst
    of keyspace events wakes many connections at once) go to Redis in one pipeline, and equal reads (the
    sockets of one user at one cursor) are sent once. A read on its own costs redis-py a connection
    checkout, a timeout wrapper and a round trip (about 200 µs of the relay's CPU, most of a delivery);
    in a pipeline it costs a few µs. Each caller gets a future of its own, so none can cancel another's."""

    def __init__(self, redis: RedisClient):
        self._redis = redis
        self._queued: dict[tuple[str, str, str], list[asyncio.Future]] = {}
        self._in_flight: set[asyncio.Task] = set()
        self._scheduled = False

    def xrange(self, stream: str, low: str, high: str) -> asyncio.Future[list[Entry]]:
        """The entries of `stream` from `low` to `high` (XRANGE bounds), at most READ_COUNT."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._queued.setdefault((stream, low, high), []).append(waiter)
        if not self._scheduled and len(self._in_flight) < READS_IN_FLIGHT:
            self._scheduled = True
            loop.call_soon(self._flush)
        return waiter

    def _flush(self) -> None:
        self._scheduled = False
        while self._queued and len(self._in_flight) < READS_IN_FLIGHT:
            if len(self._queued) <= READ_BATCH:
                batch, self._queued = self._queued, {}
            else:
                keys = list(self._queued)[:READ_BATCH]
                batch = {key: self._queued.pop(key) for key in keys}
            task = asyncio.create_task(self._read(batch), name="ws-stream-reads")
            self._in_flight.add(task)
            task.add_done_callback(self._read_done)

    def _read_done(self, task: asyncio.Task) -> None:
        self._in_flight.discard(task)
        if self._queued and not self._scheduled:
            self._flush()

    async def _read(self, batch: dict[tuple[str, str, str], list[asyncio.Future]]) -> None:
        replies: list = []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for stream, low, high in batch:
                    pipe.xrange(stream, min=low, max=high, count=READ_COUNT)
                replies = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            replies = [exc] * len(batch)
        finally:
            for waiters, reply in itertools.zip_longest(batch.values(), replies[: len(batch)]):
                if reply is None or isinstance(reply, BaseException):
                    error = reply if reply is not None else RedisError("stream read abandoned")
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(error)
                else:
                    entries = _entries(reply)
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(entries)


class NotificationStreams:
    def __init__(self, redis: RedisClient):
        self._redis = redis
        self._ranges = CoalescedRanges(redis)
        self._open = redis.register_script(_OPEN)
        self._refresh = redis.register_script(_REFRESH)

    # ---- the stream ----

    async def after(self, user_id: str, cursor: StreamId) -> list[Entry]:
        """The oldest entries after `cursor` (at most READ_COUNT; call again from the last id)."""
        return await self._ranges.xrange(notification_stream(user_id), f"({format_stream_id(cursor)}", "+")

    async def range(self, user_id: str, after: StreamId, through: StreamId) -> list[Entry]:
        """Retained entries with after < id <= through (at most READ_COUNT; call again from the last id)."""
        return await self._ranges.xrange(
            notification_stream(user_id), f"({format_stream_id(after)}", format_stream_id(through)
        )

    # ---- connection slots ----

    async def open_slot(self, user_id: str, connection_id: str, cap: int) -> tuple[bool, StreamId]:
        """Takes one of the user's connection slots (False: the cap is reached) and reads the id of the
        newest entry of the user's stream (a new connection delivers only what comes after it; 0-0 if
        none), in one round trip."""
        admitted, newest = await self._open(
            keys=open_keys(user_id), args=[cap, connection_id, CONNECTION_TTL_MS]
        )
        newest = newest.decode() if isinstance(newest, bytes) else newest
        return bool(admitted), (parse_stream_id(newest) if newest else None) or (0, 0)

    async def refresh_slots(self, slots: Sequence[tuple[str, str]]) -> None:
        """Extends the given (user id, connection id) slots, REFRESH_BATCH per round trip."""
        for start in range(0, len(slots), REFRESH_BATCH):
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id, connection_id in slots[start : start + REFRESH_BATCH]:
                    key = connections_key(user_id)
                    queue_script(pipe, self._refresh, keys=[key], args=[connection_id, CONNECTION_TTL_MS])
                await pipe.execute()

    async def release_slots(self, slots: Sequence[tuple[str, str]]) -> None:
        """Removes the given (user id, connection id) slots; one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, connection_id in slots:
                pipe.zrem(connections_key(user_id), connection_id)
            await pipe.execute()


class SlotReleaser:
    """Gives slots back in batches, from one task: when thousands of sockets close at once, single ZREMs
    per connection would queue on the pool (and time out waiting for it) while the slots stay taken."""

    def __init__(self, streams: NotificationStreams):
        self._streams = streams
        self._pending: list[tuple[str, str]] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ws-slot-releaser")

    def release(self, user_id: str, connection_id: str) -> None:
        self._pending.append((user_id, connection_id))
        self._wake.set()

    async def stop(self, timeout: float) -> None:
        """Flushes what is pending (within `timeout`; anything left expires by itself) and stops."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=timeout)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:REFRESH_BATCH], self._pending[REFRESH_BATCH:]
                try:
                    await self._streams.release_slots(batch)
                except (RedisError, OSError):  # they expire on their own
                    log.warning("could not release slots", extra={"slots": len(batch)}, exc_info=True)
            if self._stopping:
                return


def _entries(raw: list) -> list[Entry]:
    return [(entry_id.decode(), fields) for entry_id, fields in raw]
