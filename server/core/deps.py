"""What use cases and servicers may depend on; built once by the composition root (server/app.py)."""

from __future__ import annotations

from dataclasses import dataclass

from server.core.clock import Clock, utc_now
from server.core.config import Settings
from server.core.rate_limit import RateLimiter
from server.core.redis import RedisClient
from server.core.s3 import ObjectStore
from server.core.uow import UnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class Deps:
    settings: Settings
    uow: UnitOfWorkFactory
    redis: RedisClient
    store: ObjectStore
    clock: Clock = utc_now
    # the call pipeline's per-user limits (RATE_LIMITS), for a use case that counts a call itself; one per
    # process, built and closed by the composition root (None: no limits)
    limiter: RateLimiter | None = None
