"""Shared fixtures: the real stack is up (`make test` starts it); the gRPC server runs as a subprocess
for the whole session, exactly as `python -m server` runs in production."""

from __future__ import annotations

import os
import uuid

import grpc
import pytest

from library.v1 import achievement_service_pb2_grpc, game_settings_service_pb2_grpc
from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.core.redis import redis_from_settings
from tests.support.gateway import gateway_on_ws_port  # noqa: F401 (a fixture for every test module)
from tests.support.ownership import grant
from tests.support.processes import python_server, wait_serving

# The backup/restore drills destroy their stack's database: only `make test-recovery` runs them, on a stack
# of their own (scripts/test-recovery.sh sets RECOVERY_DRILL=1).
collect_ignore = [] if os.environ.get("RECOVERY_DRILL") == "1" else ["recovery"]


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def server_process():
    """`python -m server` for the whole session, unless TEST_SERVER_RUNNING=1 says one is up already."""
    if os.environ.get("TEST_SERVER_RUNNING") == "1":
        yield None
        return
    with python_server("test-server.log") as proc:
        yield proc


@pytest.fixture(scope="session")
async def grpc_target(settings: Settings, server_process) -> str:
    target = f"{settings.grpc_host}:{settings.grpc_port}"
    await wait_serving(target)
    return target


@pytest.fixture
async def channel(grpc_target: str):
    async with grpc.aio.insecure_channel(grpc_target) as ch:
        yield ch


@pytest.fixture(scope="session")
async def sessions(settings: Settings):
    """Direct database access for arranging and checking state."""
    engine = create_engine(settings.database_url, pool_size=2)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
async def redis(settings: Settings):
    client = redis_from_settings(settings, timeout=5.0)
    yield client
    await client.aclose()


@pytest.fixture
async def owner(sessions) -> tuple[uuid.UUID, uuid.UUID]:
    """(user id, product id): a fresh user owning a fresh product (its library item inserted directly)."""
    user_id, product_id = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user_id, product_id)
    return user_id, product_id


@pytest.fixture
def achievements(channel) -> achievement_service_pb2_grpc.AchievementServiceStub:
    return achievement_service_pb2_grpc.AchievementServiceStub(channel)


@pytest.fixture
def game_settings(channel) -> game_settings_service_pb2_grpc.GameSettingsSyncServiceStub:
    return game_settings_service_pb2_grpc.GameSettingsSyncServiceStub(channel)
