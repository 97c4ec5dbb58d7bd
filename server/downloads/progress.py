"""Live progress of download sessions in Redis: the only state a progress report touches (SPEC §6, §10:
never a Postgres write per report).

One hash per session, `download:{<user>}:session:<id>` (the user's hash tag, so the script can also add to
the user's notification stream `notifications:{<user>}` in the same slot):
  user, product, version     whose session it is (a report must come from that user)
  status, total              mirrored from Postgres after every transition (`put`)
  downloaded, at, speed      the last report: bytes, server time (ms), smoothed speed (bytes/s)
  notified                   when the last downloadProgress notification went out (ms)
A report is one EVALSHA of `_REPORT` (auto-pipelined with concurrent reports, like the heartbeat), which
applies `session_rules.smooth` and `session_rules.notify_due` atomically and XADDs the notification when
due. A missing hash (expired, or Redis lost it) is re-seeded from the session's row, a read, never a write.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from server.core.redis import RedisClient
from server.core.redis_batching import BatchedScript
from server.core.uow import notification_stream
from server.downloads import session_rules as rules

# KEYS[1] session hash, KEYS[2] the user's notification stream.
# ARGV: user id, now (ms), downloaded bytes, download id, then settings: speed time constant (ms),
#       notification interval (ms), ttl (ms), stream maxlen, notification type, stream ttl (s: set on each
#       XADD).
# Returns {1, status, downloaded, speed, total} (a report on a session that is not downloading changes
# nothing),
# {0} no live state (seed it and retry), {-1} not this user's, {-2, total} beyond the total.
# Mirrors session_rules.smooth / notify_due / progress_percentage / eta_seconds. Times and sizes stay
# strings where Lua would print large numbers in exponent form.
_REPORT = """
local h = redis.call('HMGET', KEYS[1], 'user', 'status', 'total', 'downloaded', 'at', 'speed', 'notified',
                      'product')
if not h[1] then return {0} end
if h[1] ~= ARGV[1] then return {-1} end
local status = h[2]
if status ~= 'downloading' then return {1, status, h[4], '0', h[3]} end
local total, now, downloaded = tonumber(h[3]), tonumber(ARGV[2]), tonumber(ARGV[3])
if downloaded > total then return {-2, h[3]} end
local speed, at = tonumber(h[6] or '0'), tonumber(h[5] or '')
local new_at = now
if at ~= nil then
  local dt, delta = now - at, downloaded - tonumber(h[4])
  if dt <= 0 or delta < 0 then
    new_at = math.max(now, at)
  else
    local instant = delta * 1000 / dt
    if speed <= 0 then
      speed = instant
    else
      speed = speed + (1 - math.exp(-dt / tonumber(ARGV[5]))) * (instant - speed)
    end
  end
end
local speed_text = string.format('%.17g', speed)
redis.call('HSET', KEYS[1], 'downloaded', ARGV[3], 'at', string.format('%d', new_at), 'speed', speed_text)
redis.call('PEXPIRE', KEYS[1], ARGV[7])
local notified = tonumber(h[7] or '')
if notified == nil or now - notified >= tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[1], 'notified', ARGV[2])
  local pct = 100
  if total > 0 then pct = math.min(100, downloaded * 100 / total) end
  local eta = cjson.null
  if speed > 0 then eta = math.ceil((total - downloaded) / speed) end
  local payload = cjson.encode({downloadId = ARGV[4], productId = h[8], downloadedBytes = downloaded,
    totalSizeBytes = total, progressPercentage = pct, speedBytesPerSecond = math.floor(speed),
    etaSeconds = eta})
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'type', ARGV[9], 'payload', payload)
  redis.call('EXPIRE', KEYS[2], ARGV[10])
end
return {1, status, ARGV[3], speed_text, h[3]}
"""

LIVE_TTL_MS = 7 * 24 * 3600 * 1000  # a silent session's live state is re-seeded from its row after this


class ReportCode(enum.IntEnum):
    BEYOND_TOTAL = -2
    NOT_FOUND = -1
    NO_LIVE_STATE = 0
    RECORDED = 1


_CODES = {code.value: code for code in ReportCode}  # a dict lookup, not an Enum call


@dataclass(slots=True)
class ReportOutcome:
    code: ReportCode
    status: str = ""
    downloaded: int = 0
    speed: float = 0.0
    total: int = 0


@dataclass(frozen=True, slots=True)
class LiveState:
    """The live part of a session as Redis holds it."""

    status: str
    downloaded: int
    speed: float


@dataclass(frozen=True, slots=True)
class Mirror:
    """The durable fields of a session a report needs, copied to Redis after every transition."""

    download_id: uuid.UUID
    user_id: uuid.UUID
    product_id: uuid.UUID
    version_id: uuid.UUID
    status: str
    total: int
    downloaded: int


def _key(user_id: uuid.UUID | str, download_id: uuid.UUID | str) -> str:
    return f"download:{{{user_id}}}:session:{download_id}"


def files_key(user_id: uuid.UUID, download_id: uuid.UUID) -> str:
    """The set of `status:path` entries already reported for a session (each file event goes out once)."""
    return f"{_key(user_id, download_id)}:files"


class LiveProgress:
    def __init__(
        self,
        redis: RedisClient,
        *,
        stream_maxlen: int,
        stream_ttl_seconds: int,
        notify_interval_ms: int = rules.PROGRESS_NOTIFY_INTERVAL_MS,
    ):
        self._redis = redis
        self._stream_maxlen = stream_maxlen
        self._stream_ttl_seconds = stream_ttl_seconds  # as the outbox relay sets it (events/senders.py)
        self._notify_interval_ms = notify_interval_ms
        self._tau_ms = int(rules.SPEED_TIME_CONSTANT_SECONDS * 1000)
        self._report = BatchedScript(redis, _REPORT).prepare(  # the settings: packed once
            2,
            self._tau_ms,
            self._notify_interval_ms,
            LIVE_TTL_MS,
            self._stream_maxlen,
            rules.PROGRESS_NOTIFICATION,
            self._stream_ttl_seconds,
        )

    async def report(
        self, user_id: uuid.UUID | str, download_id: uuid.UUID | str, now_ms: int, downloaded: int
    ) -> ReportOutcome:
        """One report (ids as UUIDs or their canonical text, which is what the hash holds)."""
        user, download = str(user_id), str(download_id)
        reply = await self._report(
            _key(user, download), notification_stream(user), user, now_ms, downloaded, download
        )
        code = _CODES[reply[0]]
        if code is ReportCode.RECORDED:
            status = reply[1].decode()
            return ReportOutcome(code, status, int(reply[2] or 0), float(reply[3] or 0), int(reply[4] or 0))
        if code is ReportCode.BEYOND_TOTAL:
            return ReportOutcome(code, total=int(reply[1]))
        return ReportOutcome(code)

    async def put(self, *mirrors: Mirror) -> None:
        """After transitions (one pipeline): each session's status and totals; its speed restarts (not
        downloading, or a fresh start). Terminal sessions have no live state."""
        if not mirrors:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for mirror in mirrors:
                key = _key(mirror.user_id, mirror.download_id)
                if mirror.status in rules.TERMINAL:
                    pipe.delete(key, files_key(mirror.user_id, mirror.download_id))
                    continue
                pipe.hdel(key, "at", "speed")
                pipe.hset(
                    key,
                    mapping={
                        "user": str(mirror.user_id),
                        "product": str(mirror.product_id),
                        "version": str(mirror.version_id),
                        "status": mirror.status,
                        "total": mirror.total,
                        "downloaded": mirror.downloaded,
                    },
                )
                pipe.pexpire(key, LIVE_TTL_MS)
            await pipe.execute()

    async def forget(self, mirrors: Iterable[Mirror]) -> None:
        """Drops the live state of sessions about to change (called once their rows are locked, before the
        commit): a report meanwhile re-reads the row and waits for the commit."""
        keys = [_key(m.user_id, m.download_id) for m in mirrors]
        if keys:
            await self._redis.delete(*keys)

    async def get_many(
        self, user_id: uuid.UUID, download_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, LiveState]:
        ids = list(download_ids)
        if not ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for download_id in ids:
                pipe.hmget(_key(user_id, download_id), "status", "downloaded", "speed")
            replies = await pipe.execute()
        live = {}
        for download_id, (status, downloaded, speed) in zip(ids, replies, strict=True):
            if status is not None:
                live[download_id] = LiveState(status.decode(), int(downloaded or 0), float(speed or 0))
        return live

    async def unseen_files(self, user_id: uuid.UUID, download_id: uuid.UUID, entries: list[str]) -> list[str]:
        """Which `status:path` entries were not reported before (a retried report emits nothing twice)."""
        if not entries:
            return []
        seen = await self._redis.smismember(files_key(user_id, download_id), entries)
        return [entry for entry, was in zip(entries, seen, strict=True) if not was]

    async def mark_files(self, user_id: uuid.UUID, download_id: uuid.UUID, entries: list[str]) -> None:
        if entries:
            key = files_key(user_id, download_id)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.sadd(key, *entries)
                pipe.pexpire(key, LIVE_TTL_MS)
                await pipe.execute()
