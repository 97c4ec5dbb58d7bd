"""Active play sessions in Redis: the only state a heartbeat touches (SPEC §6: never the database).

One hash per session, times in epoch milliseconds on the server's clock:
  user, product, device   who plays what where (a heartbeat must name the same user and product)
  seg_start, last         the open credited segment: its start and the last heartbeat
  closed                  segments closed by an uncredited gap, as "start-end," entries
  until                   family sharing: the owner reclaimed the game; nothing after this is credited
A heartbeat is one EVALSHA of `_HEARTBEAT` (auto-pipelined with concurrent heartbeats), which applies
`rules.advance` atomically. The key expires
when nobody heartbeats it for `ttl` (longer than the reaper needs to notice a silent session).

Schedules: two sorted sets of session ids, scored by when the workers should look at a session next
(epoch ms): `playtime:due:{reap}` (its last heartbeat + the silence limit, as far as it was known: never
later than it can go silent) and `playtime:due:{checkpoint}` (when its next checkpoint is due). A start
adds the session to both, an end or reap removes it. A heartbeat does not touch them (it stays one key):
the reaper re-reads a due session's last heartbeat and puts it back at its true deadline if it is not
silent yet. Workers of every process take due sessions in batches with `_CLAIM`, which pushes them a
lease ahead, so each batch goes to one worker and a crashed worker's batch comes back when the lease ends.
Each script touches one key (Redis Cluster: one slot).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from server.core.clock import Clock
from server.core.deps import Deps
from server.core.rate_limit import GCRA_LUA, RateLimit, retry_after
from server.core.redis import RedisClient
from server.core.redis_batching import BatchedScript
from server.playtime.rules import AccrualPolicy, Interval, LiveSession

# KEYS[1] session hash. ARGV: user id, product id, now (ms), longest credited gap (ms), ttl (ms), the
# heartbeat limit's GCRA emission interval and tolerance (ms; interval 0 = no limit).
# Returns 1 (recorded), 0 (no such session for this user), -1 (the session is of another product),
# {-2, ms to wait} (heartbeats come faster than the limit allows; nothing recorded), -3 (recorded up to
# the session's `until`, which has passed: the session is over).
# Mirrors rules.advance. Times stay strings: Lua would print large numbers in exponent form.
_HEARTBEAT = (
    GCRA_LUA
    + """
local s = redis.call('HMGET', KEYS[1], 'user', 'product', 'seg_start', 'last', 'tat', 'until')
if not s[1] or s[1] ~= ARGV[1] then return 0 end
if s[2] ~= ARGV[2] then return -1 end
local now, last, at = tonumber(ARGV[3]), tonumber(s[4]), ARGV[3]
if ARGV[6] ~= '0' then
  local tat, wait = gcra(tonumber(s[5]), now, tonumber(ARGV[6]), tonumber(ARGV[7]))
  if not tat then return {-2, wait} end
  redis.call('HSET', KEYS[1], 'tat', string.format('%d', tat))
end
local over = s[6] and now > tonumber(s[6])
if over then now, at = tonumber(s[6]), s[6] end
if now > last then
  if now - last > tonumber(ARGV[4]) then
    if last > tonumber(s[3]) then
      local closed = redis.call('HGET', KEYS[1], 'closed') or ''
      redis.call('HSET', KEYS[1], 'closed', closed .. s[3] .. '-' .. s[4] .. ',')
    end
    redis.call('HSET', KEYS[1], 'seg_start', at, 'last', at)
  else
    redis.call('HSET', KEYS[1], 'last', at)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if over then return -3 end
return 1
"""
)


# KEYS[1] a schedule. ARGV: now (ms), most to take, lease (ms). The due members (score <= now), earliest
# first, each pushed to now + lease.
_CLAIM = """
local due = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
local leased = tonumber(ARGV[1]) + tonumber(ARGV[3])
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', leased, member) end
return due
"""
REAP_SCHEDULE = "playtime:due:{reap}"
CHECKPOINT_SCHEDULE = "playtime:due:{checkpoint}"
SCHEDULES = (REAP_SCHEDULE, CHECKPOINT_SCHEDULE)


class HeartbeatOutcome(enum.IntEnum):
    RECLAIMED = -3
    PRODUCT_MISMATCH = -1
    NOT_FOUND = 0
    RECORDED = 1


_OUTCOMES = {outcome.value: outcome for outcome in HeartbeatOutcome}  # a dict lookup, not an Enum call


# KEYS[1] session hash, ARGV[1] the deadline (ms). Sets it unless the session has one or is gone: 1 if set.
_RECLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], 'until', ARGV[1])
"""


@dataclass(frozen=True, slots=True)
class LiveRecord:
    user_id: uuid.UUID
    product_id: uuid.UUID
    device_id: str
    state: LiveSession
    credit_until: datetime | None = None  # family sharing: the owner reclaimed the game (sharing.py)

    def reclaim_over(self, now: datetime) -> bool:
        """Whether the grace period of a reclaimed game has passed (the session is over)."""
        return self.credit_until is not None and now >= self.credit_until

    def at_most_until(self, now: datetime) -> datetime:
        """`now`, or the end of the grace period when that came first: no later time is credited."""
        return now if self.credit_until is None else min(now, self.credit_until)


def accrual_policy(deps: Deps) -> AccrualPolicy:
    return AccrualPolicy(
        heartbeat_interval=timedelta(seconds=deps.settings.playtime_heartbeat_interval_seconds)
    )


def live_sessions(deps: Deps) -> LiveSessions:
    """The store, with keys kept long enough for the reaper to close a silent session from its state."""
    settings = deps.settings
    policy = accrual_policy(deps)
    ttl = policy.silence_limit + timedelta(
        seconds=settings.playtime_checkpoint_seconds + 2 * settings.playtime_reaper_seconds
    )
    limit = heartbeat_limit(deps)
    return LiveSessions(deps.redis, policy, ttl, limit, checkpoint_every=checkpoint_every(deps))


def checkpoint_every(deps: Deps) -> timedelta:
    """How soon after a checkpoint the next is scheduled: the checkpoint period less one polling period of
    the workers, so that a session is checkpointed at least every PLAYTIME_CHECKPOINT_SECONDS."""
    settings = deps.settings
    period = settings.playtime_checkpoint_seconds
    return timedelta(seconds=max(period / 2, period - sweep_poll_seconds(deps)))


def sweep_poll_seconds(deps: Deps) -> float:
    """How often an idle worker looks at its schedule again."""
    settings = deps.settings
    return min(settings.playtime_reaper_seconds, settings.playtime_checkpoint_seconds / 4)


def heartbeat_limit(deps: Deps) -> RateLimit | None:
    """PLAYTIME_HEARTBEAT_RATE_PER_INTERVAL heartbeats per interval, bursts of PLAYTIME_HEARTBEAT_BURST."""
    settings = deps.settings
    rate, burst = settings.playtime_heartbeat_rate_per_interval, settings.playtime_heartbeat_burst
    if rate <= 0 or burst <= 0:
        return None
    interval = settings.playtime_heartbeat_interval_seconds
    return RateLimit(burst, interval * burst / rate)


def server_now(clock: Clock) -> datetime:
    """The server's time at the precision live state keeps (milliseconds), so stored and live times agree."""
    now = clock()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _time(ms: bytes | str) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def _key(session_id: uuid.UUID | str) -> str:
    return f"playtime:session:{{{session_id}}}"


def _decode(fields: dict[bytes, bytes]) -> LiveRecord | None:
    if not fields or b"user" not in fields:
        return None
    closed = tuple(
        Interval(_time(start), _time(end))
        for start, _, end in (
            entry.partition(b"-") for entry in fields.get(b"closed", b"").split(b",") if entry
        )
    )
    return LiveRecord(
        user_id=uuid.UUID(fields[b"user"].decode()),
        product_id=uuid.UUID(fields[b"product"].decode()),
        device_id=fields[b"device"].decode(),
        state=LiveSession(_time(fields[b"seg_start"]), _time(fields[b"last"]), closed),
        credit_until=_time(fields[b"until"]) if b"until" in fields else None,
    )


class LiveSessions:
    def __init__(
        self,
        redis: RedisClient,
        policy: AccrualPolicy,
        ttl: timedelta,
        limit: RateLimit | None = None,
        *,
        checkpoint_every: timedelta = timedelta(minutes=5),
    ):
        self._redis = redis
        self._silence_ms = int(policy.silence_limit.total_seconds() * 1000)
        self._checkpoint_ms = int(checkpoint_every.total_seconds() * 1000)
        self._claim = redis.register_script(_CLAIM)
        limit_args = (limit.interval_ms, limit.tolerance_ms) if limit else (0, 0)
        max_gap_ms = str(int(policy.max_credited_gap.total_seconds() * 1000))
        self._ttl_ms = int(ttl.total_seconds() * 1000)
        heartbeat = BatchedScript(redis, _HEARTBEAT)
        # the arguments after (user, product, now) are settings: packed once
        self._heartbeat = heartbeat.prepare(1, max_gap_ms, self._ttl_ms, *limit_args)
        self._heartbeat_unlimited = heartbeat.prepare(1, max_gap_ms, self._ttl_ms, 0, 0)
        self._reclaim = redis.register_script(_RECLAIM)

    async def open(self, session_id: uuid.UUID, record: LiveRecord) -> None:
        key = _key(session_id)
        mapping = {
            "user": str(record.user_id),
            "product": str(record.product_id),
            "device": record.device_id,
            "seg_start": _ms(record.state.segment_start),
            "last": _ms(record.state.last_heartbeat),
        }
        opened = _ms(record.state.last_heartbeat)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=mapping)
            pipe.pexpire(key, self._ttl_ms)
            pipe.zadd(REAP_SCHEDULE, {str(session_id): opened + self._silence_ms})
            pipe.zadd(CHECKPOINT_SCHEDULE, {str(session_id): opened + self._checkpoint_ms})
            await pipe.execute()

    async def heartbeat(
        self,
        session_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        product_id: uuid.UUID | str,
        now: datetime,
        *,
        limited: bool = True,
    ) -> HeartbeatOutcome:
        """Records a heartbeat; raises RateLimited when they come faster than the limit allows (unless not
        `limited`: a start that resumes the session counts as a heartbeat, but is not one to refuse).
        Ids are UUIDs or their canonical text (lowercase, hyphenated), which is what the hash holds."""
        script = self._heartbeat if limited else self._heartbeat_unlimited
        result = await script(_key(session_id), str(user_id), str(product_id), _ms(now))
        if type(result) is list:
            raise retry_after(int(result[1]))
        return _OUTCOMES[result]

    async def reclaim(self, session_id: uuid.UUID, until: datetime) -> bool:
        """Credits the session up to `until` at most (family sharing); False when it had a deadline
        already, or is not live."""
        return bool(await self._reclaim(keys=[_key(session_id)], args=[_ms(until)]))

    async def get(self, session_id: uuid.UUID) -> LiveRecord | None:
        return _decode(await self._redis.hgetall(_key(session_id)))

    async def get_many(self, session_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, LiveRecord]:
        ids = list(session_ids)
        if not ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.hgetall(_key(session_id))
            replies = await pipe.execute()
        decoded = {session_id: _decode(fields) for session_id, fields in zip(ids, replies, strict=True)}
        return {session_id: record for session_id, record in decoded.items() if record is not None}

    async def delete(self, session_id: uuid.UUID) -> None:
        await self.forget([session_id])

    async def forget(self, session_ids: list[uuid.UUID]) -> None:
        """Forgets ended sessions: their state and their places in the schedules."""
        if session_ids:
            async with self._redis.pipeline(transaction=False) as pipe:
                for session_id in session_ids:
                    pipe.delete(_key(session_id))
                for schedule in SCHEDULES:
                    pipe.zrem(schedule, *(str(s) for s in session_ids))
                await pipe.execute()

    async def scheduled(self) -> int:
        """How many sessions the reap schedule holds: the active sessions."""
        return await self._redis.zcard(REAP_SCHEDULE)

    async def claim_due(self, schedule: str, now: datetime, limit: int, lease: timedelta) -> list[uuid.UUID]:
        """Up to `limit` sessions due on `schedule` by `now`, now this worker's for `lease`."""
        due = await self._claim(keys=[schedule], args=[_ms(now), limit, int(lease.total_seconds() * 1000)])
        return [uuid.UUID(member.decode()) for member in due]

    async def reschedule(self, schedule: str, when: dict[uuid.UUID, datetime]) -> None:
        """Moves sessions still on `schedule` (ZADD XX: an ended session is not put back)."""
        if when:
            await self._redis.zadd(schedule, {str(s): _ms(t) for s, t in when.items()}, xx=True)

    async def due_by(self, schedule: str, when: dict[uuid.UUID, datetime]) -> None:
        """Makes sessions still on `schedule` due no later than `when` (ZADD XX LT)."""
        if when:
            await self._redis.zadd(schedule, {str(s): _ms(t) for s, t in when.items()}, xx=True, lt=True)

    async def schedule_missing(self, session_ids: list[uuid.UUID], now: datetime) -> None:
        """Puts sessions the schedules lack on both, due now (ZADD NX: others keep their place)."""
        if session_ids:
            members = {str(s): _ms(now) for s in session_ids}
            async with self._redis.pipeline(transaction=False) as pipe:
                for schedule in SCHEDULES:
                    pipe.zadd(schedule, members, nx=True)
                await pipe.execute()

    async def unschedule(self, session_ids: list[uuid.UUID]) -> None:
        if session_ids:
            async with self._redis.pipeline(transaction=False) as pipe:
                for schedule in SCHEDULES:
                    pipe.zrem(schedule, *(str(s) for s in session_ids))
                await pipe.execute()
