"""The composition root: builds every adapter, use case, servicer and worker, and runs them.

Nothing else in the code base constructs infrastructure; capabilities receive what they need here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from prometheus_client import start_http_server
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncEngine

from download.v1 import download_service_pb2, download_service_pb2_grpc
from library.v1 import (
    achievement_service_pb2,
    achievement_service_pb2_grpc,
    cloud_save_service_pb2,
    cloud_save_service_pb2_grpc,
    game_settings_service_pb2,
    game_settings_service_pb2_grpc,
    library_service_pb2,
    library_service_pb2_grpc,
    playtime_service_pb2,
    playtime_service_pb2_grpc,
)
from server.achievements.consumers import achievement_consumers
from server.achievements.servicer import AchievementServiceServicer
from server.cloud_saves.servicer import CloudSaveServiceServicer
from server.cloud_saves.sweeper import SaveSweeper
from server.core import tracing
from server.core.auth import TokenVerifier
from server.core.call_pipeline import CallPipeline, PipelineInterceptor
from server.core.config import Settings
from server.core.db import DbTimeouts, create_engine, create_pool, create_sessionmaker
from server.core.deps import Deps
from server.core.events.dead_letters import DeadLetterGauges
from server.core.events.relay import OutboxRelay
from server.core.health import HealthMonitor
from server.core.method_table import MethodTable
from server.core.rate_limit import RateLimiter, parse_limits
from server.core.redis import RedisClient, redis_from_settings
from server.core.retention import RetentionJob, event_retention_rules
from server.core.s3 import ObjectStore
from server.core.uow import UnitOfWorkFactory
from server.downloads.consumers import download_consumers
from server.downloads.retention import download_retention_rules
from server.downloads.servicer import DownloadServiceServicer
from server.downloads.sessions import DownloadSessions, run_promoter
from server.game_settings.servicer import GameSettingsSyncServiceServicer
from server.library.consumers import library_consumers
from server.library.family_consumers import family_consumers
from server.library.retention import library_retention_rules
from server.library.sales import run_sale_fanout
from server.library.servicer import LibraryServiceServicer
from server.playtime.servicer import PlaytimeTrackerServiceServicer
from server.playtime.sweeper import SessionSweeper

log = logging.getLogger(__name__)


@dataclass
class Application:
    settings: Settings
    engine: AsyncEngine
    pool: AsyncConnectionPool
    redis: RedisClient
    relay: OutboxRelay
    deps: Deps
    verifier: TokenVerifier
    limiter: RateLimiter
    server: grpc.aio.Server | None = None
    service_names: list[str] = field(default_factory=list)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings) -> Application:
        tracing.configure(settings)
        db_timeouts = DbTimeouts.from_settings(settings)
        engine = create_engine(settings.database_url, pool_size=settings.db_pool_size, timeouts=db_timeouts)
        sessions = create_sessionmaker(engine)
        redis = redis_from_settings(settings)
        relay = OutboxRelay.from_settings(settings, redis)
        pool = create_pool(settings.database_url, size=settings.db_pool_size, timeouts=db_timeouts)
        uow = UnitOfWorkFactory(sessions, settings.event_source, relay.wake, pool)
        store = ObjectStore(settings)  # opened in start(): one long-lived client per process
        limiter = RateLimiter(redis, parse_limits(settings.rate_limits))
        deps = Deps(settings, uow, redis, store, limiter=limiter)
        verifier = TokenVerifier.from_settings(settings)
        return cls(settings, engine, pool, redis, relay, deps, verifier, limiter)

    def _register_services(self, methods: MethodTable) -> list[ServiceDescriptor]:
        """Every v1 service. A capability not built yet keeps its generated base servicer, whose methods
        answer UNIMPLEMENTED."""
        registrations = [
            (
                library_service_pb2,
                "LibraryService",
                library_service_pb2_grpc.add_LibraryServiceServicer_to_server,
                LibraryServiceServicer(self.deps),
            ),
            (
                playtime_service_pb2,
                "PlaytimeTrackerService",
                playtime_service_pb2_grpc.add_PlaytimeTrackerServiceServicer_to_server,
                PlaytimeTrackerServiceServicer(self.deps),
            ),
            (
                achievement_service_pb2,
                "AchievementService",
                achievement_service_pb2_grpc.add_AchievementServiceServicer_to_server,
                AchievementServiceServicer(self.deps),
            ),
            (
                cloud_save_service_pb2,
                "CloudSaveService",
                cloud_save_service_pb2_grpc.add_CloudSaveServiceServicer_to_server,
                CloudSaveServiceServicer(self.deps),
            ),
            (
                game_settings_service_pb2,
                "GameSettingsSyncService",
                game_settings_service_pb2_grpc.add_GameSettingsSyncServiceServicer_to_server,
                GameSettingsSyncServiceServicer(self.deps),
            ),
            (
                download_service_pb2,
                "DownloadService",
                download_service_pb2_grpc.add_DownloadServiceServicer_to_server,
                DownloadServiceServicer(self.deps),
            ),
        ]
        services = []
        for pb2_module, name, add, servicer in registrations:
            service = pb2_module.DESCRIPTOR.services_by_name[name]
            add(servicer, methods)
            services.append(service)
            self.service_names.append(service.full_name)
        return services

    def _workers(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """Background workers of this process: the outbox relay, consumers, reapers."""
        sweeper = SessionSweeper(self.deps)
        downloads = DownloadSessions(self.deps)
        settings = self.settings
        retention = RetentionJob(
            self.deps.uow,
            [
                *event_retention_rules(settings),
                *library_retention_rules(settings),
                *download_retention_rules(settings),
            ],
            self.deps.clock,
            batch_size=settings.retention_batch_size,
            interval_seconds=settings.retention_interval_seconds,
        )
        return [
            ("outbox-relay", self.relay.run()),
            (
                "dead-letter-gauges",
                DeadLetterGauges(
                    settings.database_url,
                    DbTimeouts.from_settings(settings),
                    refresh_seconds=settings.dead_letter_gauges_refresh_seconds,
                ).run(),
            ),
            *((consumer.name, consumer.run()) for consumer in library_consumers(self.deps)),
            *((consumer.name, consumer.run()) for consumer in family_consumers(self.deps)),
            ("wishlist-sale-fanout", run_sale_fanout(self.deps)),
            *((consumer.name, consumer.run()) for consumer in achievement_consumers(self.deps)),
            *((consumer.name, consumer.run()) for consumer in download_consumers(self.deps, downloads)),
            (
                "download-queue-promoter",
                run_promoter(downloads, self.settings.download_queue_promote_seconds),
            ),
            ("playtime-reaper", sweeper.run_reaper()),
            ("playtime-checkpointer", sweeper.run_checkpointer()),
            ("cloud-save-sweeper", SaveSweeper(self.deps).run()),
            ("retention", retention.run()),
        ]

    async def start(self) -> None:
        settings = self.settings
        await self.deps.store.open()
        methods = MethodTable()
        services = self._register_services(methods)
        server = grpc.aio.server(
            interceptors=[PipelineInterceptor(CallPipeline(self.verifier, self.limiter), methods, services)],
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 8 * 1024 * 1024)],
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, methods)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(
                [*self.service_names, "grpc.health.v1.Health", reflection.SERVICE_NAME]
            ),
            methods,
        )
        server.add_generic_rpc_handlers((methods,))
        server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
        await self.pool.open()
        monitor = HealthMonitor(health_servicer, self.service_names, self.engine, self.redis)
        await monitor.check_once()
        await server.start()
        self.server = server
        self._tasks.append(asyncio.create_task(monitor.run(), name="health"))
        if settings.workers_enabled:
            for name, worker in self._workers():
                self._tasks.append(asyncio.create_task(worker, name=name))
        log.info("serving", extra={"grpc": f"{settings.grpc_host}:{settings.grpc_port}"})

    def start_metrics(self) -> None:
        start_http_server(self.settings.metrics_port, addr=self.settings.grpc_host)

    async def stop(self) -> None:
        """Drains in-flight RPCs (up to the grace period), then stops workers and closes pools."""
        if self.server is not None:
            await self.server.stop(self.settings.shutdown_grace_seconds)
        await cancel_all(self._tasks)
        await self.deps.store.close()
        self.limiter.close()
        tracing.shutdown()
        await self.redis.aclose()
        await self.pool.close()
        await self.engine.dispose()


async def cancel_all(tasks: list[asyncio.Task], *, rounds: int = 5, wait_seconds: float = 2.0) -> None:
    """Cancels the workers and waits for them, cancelling again those still running: a cancellation can be
    swallowed on its way (redis-py's timeout wrapper loses one on Python 3.11), and a stop must never hang
    on a worker that missed it. Workers still running after `rounds` are left to the process's exit."""
    pending = {task for task in tasks if not task.done()}
    for _ in range(rounds):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=wait_seconds)
    if pending:
        log.warning("workers did not stop", extra={"workers": sorted(task.get_name() for task in pending)})
