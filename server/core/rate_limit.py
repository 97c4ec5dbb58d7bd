"""Per-user rate limits on chosen RPCs (SPEC §9), shared by every server process through Redis.

A limit is GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): `count` calls per
`period` with bursts up to `count`; the state per (method, user) is the "theoretical arrival time" of the
next call, one Redis string that expires when the bucket is full again. One Lua script checks and advances
it atomically, so all processes share each user's budget. Times come from the server's clock (injectable;
tests control it). `GCRA_LUA` is the rule itself, also used inside the heartbeat script (playtime/live.py),
and `LIMIT_LUA` the rule applied to a bucket key, also used inside the progress report script
(downloads/progress.py): there the limit costs no extra round trip. A servicer method that applies its
RATE_LIMITS entry itself that way is marked `@counts_own_limit`, and the pipeline leaves it unwrapped.

Redis down or hung: the call goes through unlimited (logged; Redis is then left alone for a moment,
server/core/breaker.py). A limit guards against abuse, and refusing every write while Redis is away
would be the bigger harm; the calls themselves may not need Redis at all (achievements).

Limits are configured per method (`RATE_LIMITS`, "Service/Method=count/seconds,..."), so an RPC is covered
by configuration alone; the call pipeline wraps only the methods that have one.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from server.core import auth
from server.core.breaker import Breaker
from server.core.clock import Clock, utc_now
from server.core.config import ConfigurationError
from server.core.errors import RateLimited
from server.core.redis import RedisClient
from server.core.redis_batching import BatchedScript

log = logging.getLogger(__name__)

# gcra(tat, now, interval, tolerance) -> new tat, 0 when the call conforms; nil, ms to wait otherwise.
# All in milliseconds; `tat` is nil for a fresh bucket.
GCRA_LUA = """
local function gcra(tat, now, interval, tolerance)
  if not tat or tat < now then tat = now end
  local allowed_at = tat - tolerance
  if now < allowed_at then return nil, allowed_at - now end
  return tat + interval, 0
end
"""

# limit(bucket key, now, interval, tolerance) -> 0 when the call conforms (it is counted), otherwise the
# milliseconds to wait (nothing counted). Numbers, all in milliseconds.
LIMIT_LUA = (
    GCRA_LUA
    + """
local function limit(key, now, interval, tolerance)
  local tat, wait = gcra(tonumber(redis.call('GET', key)), now, interval, tolerance)
  if not tat then return wait end
  redis.call('SET', key, string.format('%d', tat), 'PX', string.format('%d', tat - now))
  return 0
end
"""
)

# KEYS[1] bucket. ARGV: now (ms), emission interval (ms), tolerance (ms). Returns 0 (allowed) or the
# milliseconds to wait.
_LIMIT = LIMIT_LUA + "return limit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))\n"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`count` calls per `period_seconds`, in bursts of up to `count`."""

    count: int
    period_seconds: float

    @property
    def interval_ms(self) -> int:
        """GCRA emission interval: the sustained spacing between calls."""
        return max(1, round(self.period_seconds * 1000 / self.count))

    @property
    def tolerance_ms(self) -> int:
        """How far ahead of the sustained pace a burst may run (count - 1 intervals)."""
        return self.interval_ms * (self.count - 1)


def parse_limits(spec: str) -> dict[str, RateLimit]:
    """`"Service/Method=count/seconds,..."` (RATE_LIMITS) → {"Service/Method": RateLimit}."""
    limits = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        method, sep, rate = item.partition("=")
        count, slash, seconds = rate.partition("/")
        try:
            limit = RateLimit(int(count), float(seconds))
        except ValueError:
            limit = None
        if not sep or not slash or "/" not in method or limit is None or limit.count < 1:
            raise ConfigurationError(f"RATE_LIMITS: expected Service/Method=count/seconds, got {item!r}")
        if limit.period_seconds <= 0:
            raise ConfigurationError(f"RATE_LIMITS: the period of {method} must be positive")
        limits[method.strip()] = limit
    return limits


def bucket_key(method: str, subject: str) -> str:
    """The Redis key of `subject`'s budget for `method` (a gRPC path): the subject is its hash tag, so a
    script of that user's keys can count the call in the same slot."""
    return f"ratelimit:{{{subject}}}:{method}"


def counts_own_limit(behavior: Callable) -> Callable:
    """Marks a servicer method that applies its RATE_LIMITS entry itself (`bucket_key`, `LIMIT_LUA`, in the
    Redis script the call runs anyway): the pipeline does not count it a second time."""
    behavior.counts_own_limit = True  # type: ignore[attr-defined]
    return behavior


def retry_after(wait_ms: int) -> RateLimited:
    return RateLimited(max(1, math.ceil(wait_ms / 1000)))


class RateLimiter:
    def __init__(self, redis: RedisClient, limits: dict[str, RateLimit], clock: Clock = utc_now):
        self._limits = limits
        self._clock = clock
        self._script = BatchedScript(redis, _LIMIT) if limits else None
        self._redis = Breaker()

    def limit_of(self, method: str) -> RateLimit | None:
        """The limit of a gRPC method path (`/library.v1.Service/Method`), if one is configured."""
        return self._limits.get(method.rsplit(".", 1)[-1])

    async def acquire(self, method: str, subject: str, limit: RateLimit) -> None:
        """Counts one call of `subject` to `method`; raises RateLimited (with the wait) over the limit."""
        assert self._script is not None
        now_ms = int(self._clock().timestamp() * 1000)
        wait = await self._script(
            keys=[bucket_key(method, subject)], args=[now_ms, limit.interval_ms, limit.tolerance_ms]
        )
        if wait:
            raise retry_after(int(wait))

    async def admit(self, method: str, subject: str) -> None:
        """Counts one call of `subject` to `method` if it has a limit (RateLimited over it); with Redis
        unavailable the call goes through unlimited."""
        limit = self.limit_of(method)
        if limit is None or self._redis.open:
            return
        try:
            await self.acquire(method, subject, limit)
        except Exception as error:
            if not self._redis.failed(error):
                raise
            log.warning("rate limit not applied: Redis is unavailable", extra={"method": method})

    def guard(self, method: str, behavior: Callable) -> Callable:
        """`behavior` (a servicer method), counted against the caller's limit first if `method` has one
        (and `behavior` does not count its calls itself: `counts_own_limit`)."""
        if self.limit_of(method) is None or getattr(behavior, "counts_own_limit", False):
            return behavior

        async def limited(request, ctx):
            await self.admit(method, auth.current_principal().subject)
            result = behavior(request, ctx)
            return await result if inspect.isawaitable(result) else result

        return limited

    def close(self) -> None:
        if self._script is not None:
            self._script.close()
