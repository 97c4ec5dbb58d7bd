"""gRPC health (grpc.health.v1) per service and overall, following DB and Redis reachability."""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.core.redis import RedisClient

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthMonitor:
    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        services: list[str],
        engine: AsyncEngine,
        redis: RedisClient,
    ):
        self._servicer = servicer
        self._services = ["", *services]
        self._engine = engine
        self._redis = redis

    async def check_once(self) -> bool:
        try:
            async with asyncio.timeout(2.0):
                async with self._engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                await self._redis.ping()
            healthy = True
        except Exception as exc:  # any failure of a dependency means NOT_SERVING
            log.warning("dependency check failed: %s", type(exc).__name__)
            healthy = False
        await self.set_all(SERVING if healthy else NOT_SERVING)
        return healthy

    async def set_all(self, status) -> None:
        for name in self._services:
            await self._servicer.set(name, status)

    async def run(self, interval: float = 2.0) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(interval)
