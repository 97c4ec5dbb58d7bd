"""Live progress of download sessions in Redis: the only state a progress report touches (SPEC §6, §10:
never a Postgres write per report).

One hash per session, `download:{<user>}:session:<id>` (the user's hash tag, so the script can also add to
the user's notification stream `notifications:{<user>}` in the same slot):
  user, product, version     whose session it is (the key's hash tag is the owner's id, and a report reads
                             only keys of the caller's: another user's download has no live state there)
  status, total              mirrored from Postgres after every transition (`put`)
  downloaded, at, speed      the last report: bytes, server time (ms), smoothed speed (bytes/s)
  notified                   when the last downloadProgress notification went out (ms); the key's TTL is
                             renewed with it, so at most once a second
A report is one EVALSHA of `_REPORT` (auto-pipelined with concurrent reports, like the heartbeat), which
counts the call against the user's RATE_LIMITS budget for ReportDownloadProgress (the pipeline's bucket,
`rate_limit.bucket_key`, in the user's slot too), applies `session_rules.smooth` and
`session_rules.notify_due` atomically and XADDs the notification when due: one round trip, as the
heartbeat (the pipeline's separate limit script made it two: measured in docs/ARCHITECTURE.md). A missing
hash (expired, or Redis lost it) is re-seeded from the session's row, a read, never a write; the retry
after it is not counted again.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from server.core.rate_limit import LIMIT_LUA, RateLimit, bucket_key, retry_after
from server.core.redis import RedisClient
from server.core.redis_batching import BatchedScript
from server.core.uow import notification_stream
from server.downloads import session_rules as rules

# KEYS[1] session hash, KEYS[2] the user's notification stream, KEYS[3] the user's rate limit bucket.
# ARGV: now (ms), downloaded bytes, '1' to count the call against the limit ('0': counted already).
# The settings are Lua constants rendered in front of the script (`_settings`), and the download id is read
# from the session key: the command carries only what varies. Its size matters: Redis reads
# 16 KiB of a connection's pipelined commands at a time and answers each read's commands together, so a
# command twice the heartbeat's split the auto-pipelined batches in two, doubling the per-batch work
# (measured in docs/ARCHITECTURE.md).
# Returns {1, status, downloaded, speed, total} (a report on a session that is not downloading changes
# nothing),
# {0} no live state (seed it and retry: another user's download has none under this user's key), {-2, total}
# beyond the total,
# {-3, ms to wait} over the rate limit (nothing recorded; every other outcome counted the call).
# Mirrors session_rules.smooth / notify_due / progress_percentage / eta_seconds. Times and sizes stay
# strings where Lua would print large numbers in exponent form.
_REPORT = (
    LIMIT_LUA
    + """
local now = tonumber(ARGV[1])
if ARGV[3] == '1' then
  local wait = limit(KEYS[3], now, LIMIT_INTERVAL_MS, LIMIT_TOLERANCE_MS)
  if wait ~= 0 then return {-3, wait} end
end
local h = redis.call('HMGET', KEYS[1], 'status', 'total', 'downloaded', 'at', 'speed', 'notified', 'product')
local status = h[1]
if not status then return {0} end
if status ~= 'downloading' then return {1, status, h[3], '0', h[2]} end
local total, downloaded = tonumber(h[2]), tonumber(ARGV[2])
if downloaded > total then return {-2, h[2]} end
local speed, at = tonumber(h[5] or '0'), tonumber(h[4] or '')
local new_at = now
if at ~= nil then
  local dt, delta = now - at, downloaded - tonumber(h[3])
  if dt <= 0 or delta < 0 then
    new_at = math.max(now, at)
  else
    local instant = delta * 1000 / dt
    if speed <= 0 then
      speed = instant
    else
      speed = speed + (1 - math.exp(-dt / SPEED_TIME_CONSTANT_MS)) * (instant - speed)
    end
  end
end
local speed_text = string.format('%.17g', speed)
local at_text = ARGV[1]
if new_at ~= now then at_text = string.format('%d', new_at) end
redis.call('HSET', KEYS[1], 'downloaded', ARGV[2], 'at', at_text, 'speed', speed_text)
local notified = tonumber(h[6] or '')
if notified == nil or now - notified >= NOTIFY_INTERVAL_MS then
  redis.call('HSET', KEYS[1], 'notified', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], LIVE_TTL)
  local download = string.match(KEYS[1], ':session:(.*)$')
  local pct = 100
  if total > 0 then pct = math.min(100, downloaded * 100 / total) end
  local eta = cjson.null
  if speed > 0 then
    local left = (total - downloaded) / speed
    if left <= ETA_MAX_SECONDS then eta = math.ceil(left) end
  end
  local payload = cjson.encode({downloadId = download, productId = h[7], downloadedBytes = downloaded,
    totalSizeBytes = total, progressPercentage = pct, speedBytesPerSecond = math.floor(speed),
    etaSeconds = eta})
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', STREAM_MAXLEN, '*', 'type', NOTIFICATION, 'payload', payload)
  redis.call('EXPIRE', KEYS[2], STREAM_TTL)
end
return {1, status, ARGV[2], speed_text, h[2]}
"""
)


def _settings(**values: int | str) -> str:
    """Lua constants for the script's settings: numbers as numbers, what goes to redis.call as text (Lua
    would print a large number in exponent form)."""
    return "".join(
        f"local {name} = {value}\n" if isinstance(value, int) else f"local {name} = '{value}'\n"
        for name, value in values.items()
    )


LIVE_TTL_MS = 7 * 24 * 3600 * 1000  # a silent session's live state is re-seeded from its row after this
REPORT_METHOD = "/download.v1.DownloadService/ReportDownloadProgress"  # whose rate limit a report counts


class ReportCode(enum.IntEnum):
    RATE_LIMITED = -3
    BEYOND_TOTAL = -2
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
        limit: RateLimit | None = None,
    ):
        self._redis = redis
        settings = _settings(
            LIMIT_INTERVAL_MS=limit.interval_ms if limit else 0,
            LIMIT_TOLERANCE_MS=limit.tolerance_ms if limit else 0,
            SPEED_TIME_CONSTANT_MS=int(rules.SPEED_TIME_CONSTANT_SECONDS * 1000),
            NOTIFY_INTERVAL_MS=notify_interval_ms,
            ETA_MAX_SECONDS=rules.ETA_MAX_SECONDS,
            LIVE_TTL=str(LIVE_TTL_MS),
            STREAM_MAXLEN=str(stream_maxlen),
            NOTIFICATION=rules.PROGRESS_NOTIFICATION,
            STREAM_TTL=str(stream_ttl_seconds),  # as the outbox relay sets it (events/senders.py)
        )
        script = BatchedScript(redis, settings + _REPORT)
        self._uncounted = script.prepare(3, 0)
        self._counted = script.prepare(3, 1) if limit else self._uncounted

    async def report(
        self,
        user_id: uuid.UUID | str,
        download_id: uuid.UUID | str,
        now_ms: int,
        downloaded: int,
        *,
        counted: bool = True,
    ) -> ReportOutcome:
        """One report (ids as UUIDs or their canonical text, which is what the hash holds), counted
        against the user's rate limit unless `counted` is false (a retry, or counted already); over the
        limit it raises RateLimited, having recorded nothing."""
        user, download = str(user_id), str(download_id)
        run = self._counted if counted else self._uncounted
        reply = await run(
            _key(user, download),
            notification_stream(user),
            bucket_key(REPORT_METHOD, user),
            now_ms,
            downloaded,
        )
        code = _CODES[reply[0]]
        if code is ReportCode.RECORDED:
            status = reply[1].decode()
            return ReportOutcome(code, status, int(reply[2] or 0), float(reply[3] or 0), int(reply[4] or 0))
        if code is ReportCode.BEYOND_TOTAL:
            return ReportOutcome(code, total=int(reply[1]))
        if code is ReportCode.RATE_LIMITED:
            raise retry_after(int(reply[1]))
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
