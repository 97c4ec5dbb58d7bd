"""`python -m tests.support.relay_worker`: the server's outbox relay (OutboxRelay.from_settings, exactly as
the composition root builds it) alone in a process, configured by the environment like `python -m server`.

Tests start several to relay one outbox concurrently and kill them mid-batch; the whole server would spend
most of a test's time starting up."""

from __future__ import annotations

import asyncio

from server.core.config import Settings
from server.core.events.relay import OutboxRelay
from server.core.redis import redis_from_settings


async def main() -> None:
    settings = Settings.from_env()
    redis = redis_from_settings(settings, timeout=5.0)
    try:
        await OutboxRelay.from_settings(settings, redis).run()
    finally:
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
