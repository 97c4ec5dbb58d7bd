"""gRPC health follows the reachability of PostgreSQL and Redis (SPEC §9)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from server.core.db import create_engine
from server.core.health import HealthMonitor
from server.core.redis import create_redis
from tests.support.processes import free_port

SERVICES = ["library.v1.LibraryService", "download.v1.DownloadService"]


async def _statuses(database_url: str, redis_url: str) -> dict[str, int]:
    engine, redis = create_engine(database_url, pool_size=1), create_redis(redis_url)
    servicer = health.aio.HealthServicer()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        await HealthMonitor(servicer, SERVICES, engine, redis).check_once()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return {
                name: (await stub.Check(health_pb2.HealthCheckRequest(service=name))).status
                for name in ["", *SERVICES]
            }
    finally:
        await server.stop(0)
        await redis.aclose()
        await engine.dispose()


async def test_serving_while_database_and_redis_answer(settings):
    statuses = await _statuses(settings.database_url, settings.redis_url)
    assert set(statuses.values()) == {health_pb2.HealthCheckResponse.SERVING}


async def test_not_serving_when_the_database_is_unreachable(settings):
    dead = make_url(settings.database_url).set(port=free_port()).render_as_string(hide_password=False)
    statuses = await _statuses(dead, settings.redis_url)
    assert set(statuses.values()) == {health_pb2.HealthCheckResponse.NOT_SERVING}


async def test_not_serving_when_redis_is_unreachable(settings):
    statuses = await _statuses(settings.database_url, f"redis://127.0.0.1:{free_port()}/0")
    assert set(statuses.values()) == {health_pb2.HealthCheckResponse.NOT_SERVING}
