"""Redis side of the relay: the user's notification stream and the per-user connection slots.

All state lives in Redis, so any gateway instance can serve any user:
- `notifications:{<user>}` (server.core.uow.notification_stream) is the stream the outbox relay XADDs to;
  each connection reads it with XREAD BLOCK from its own cursor.
- `notifications:{<user>}:connections` is a sorted set of the user's open connections (member = connection
  id, score = expiry in Redis server milliseconds). Instances refresh their members while connected, so a
  crashed instance's connections stop counting after CONNECTION_TTL_MS.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from gateway.protocol import StreamId, format_stream_id, parse_stream_id
from server.core.uow import notification_stream

CONNECTION_TTL_MS = 60_000
READ_BLOCK_MS = 2_000  # below the Redis client's socket timeout (server/core/redis.py)
READ_COUNT = 100

Entry = tuple[str, dict[bytes, bytes]]

_NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# KEYS[1] connections zset; ARGV: cap, connection id, ttl ms → 1 admitted, 0 over the cap.
_ACQUIRE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[2]) == false
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
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


class NotificationStreams:
    def __init__(self, redis: Redis):
        self._redis = redis
        self._acquire = redis.register_script(_ACQUIRE)
        self._refresh = redis.register_script(_REFRESH)

    # ---- the stream ----

    async def last_id(self, user_id: str) -> StreamId:
        """The id of the newest entry (a new connection delivers only what comes after it); 0-0 if none."""
        newest = await self._redis.xrevrange(notification_stream(user_id), "+", "-", count=1)
        if not newest:
            return (0, 0)
        return parse_stream_id(newest[0][0].decode()) or (0, 0)

    async def read(self, user_id: str, after: StreamId, *, block_ms: int = READ_BLOCK_MS) -> list[Entry]:
        """Entries after `after`, waiting up to block_ms for the first one; [] on timeout."""
        reply = await self._redis.xread(
            {notification_stream(user_id): format_stream_id(after)}, count=READ_COUNT, block=block_ms
        )
        return _entries(reply[0][1]) if reply else []

    async def range(self, user_id: str, after: StreamId, through: StreamId) -> list[Entry]:
        """Retained entries with after < id <= through (at most READ_COUNT; call again from the last id)."""
        reply = await self._redis.xrange(
            notification_stream(user_id),
            min=f"({format_stream_id(after)}",
            max=format_stream_id(through),
            count=READ_COUNT,
        )
        return _entries(reply)

    # ---- connection slots ----

    async def acquire_slot(self, user_id: str, connection_id: str, cap: int) -> bool:
        return bool(
            await self._acquire(keys=[connections_key(user_id)], args=[cap, connection_id, CONNECTION_TTL_MS])
        )

    async def refresh_slots(self, slots: Sequence[tuple[str, str]]) -> None:
        """Extends the given (user id, connection id) slots; one round trip."""
        if not slots:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, connection_id in slots:
                await self._refresh(
                    keys=[connections_key(user_id)], args=[connection_id, CONNECTION_TTL_MS], client=pipe
                )
            await pipe.execute()

    async def release_slot(self, user_id: str, connection_id: str) -> None:
        await self._redis.zrem(connections_key(user_id), connection_id)


def _entries(raw: list) -> list[Entry]:
    return [(entry_id.decode(), fields) for entry_id, fields in raw]
