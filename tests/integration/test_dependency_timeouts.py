"""A hung dependency (the stack's Redis or PostgreSQL stopped with SIGSTOP: it keeps its sockets and never
answers) makes every RPC answer within its bound: UNAVAILABLE with reason UNAVAILABLE, or a normal answer
where the call can do without that dependency. Never a hang until the client gives up.

The module runs its own `python -m server` on the real stack with 2 s bounds (REDIS_TIMEOUT_SECONDS,
DB_*_TIMEOUT_SECONDS). Each RPC is awaited for at most CAP seconds by the test itself, with no gRPC
deadline: an answer proves the server answered on its own. The stack's processes are always continued
(tests/support/processes.py), so later tests sharing the stack are unaffected.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from library.v1 import achievement_service_pb2 as apb
from library.v1 import (
    achievement_service_pb2_grpc,
    game_settings_service_pb2_grpc,
    library_service_pb2_grpc,
    playtime_service_pb2_grpc,
)
from library.v1 import game_settings_service_pb2 as gpb
from library.v1 import library_service_pb2 as lpb
from library.v1 import playtime_service_pb2 as ppb
from tests.support.achievements import achievement, define
from tests.support.auth import user_metadata
from tests.support.grpc_errors import error_details
from tests.support.processes import (
    ROOT,
    free_port,
    hung_postgres,
    hung_stack_process,
    python_server,
    wait_serving,
)

BOUND = 2  # seconds: every dependency bound of the module's server
CAP = 4 * BOUND  # what the test waits for an answer; today's code hangs well past it
LOG = "test-dependency-timeouts-server.log"


@pytest.fixture(scope="module")
def bounded_server_port():
    port = free_port()
    with python_server(
        LOG,
        GRPC_PORT=str(port),
        METRICS_PORT=str(free_port()),
        WORKERS_ENABLED="0",
        REDIS_TIMEOUT_SECONDS=str(BOUND),
        DB_CONNECT_TIMEOUT_SECONDS=str(BOUND),
        DB_STATEMENT_TIMEOUT_SECONDS=str(BOUND),
        DB_LOCK_TIMEOUT_SECONDS=str(BOUND),
        LOG_LEVEL="INFO",
    ):
        yield port


@pytest.fixture(scope="module")
async def target(bounded_server_port: int) -> str:
    address = f"127.0.0.1:{bounded_server_port}"
    await wait_serving(address)
    return address


@pytest.fixture
async def stubs(target):
    async with grpc.aio.insecure_channel(target) as channel:
        yield (
            library_service_pb2_grpc.LibraryServiceStub(channel),
            achievement_service_pb2_grpc.AchievementServiceStub(channel),
            playtime_service_pb2_grpc.PlaytimeTrackerServiceStub(channel),
            game_settings_service_pb2_grpc.GameSettingsSyncServiceStub(channel),
        )


async def outcome(call, *, timeout: float | None = None) -> str:
    """ "OK", or the failed call's code and ErrorInfo reason, once it answered (within CAP seconds)."""
    try:
        await asyncio.wait_for(call, CAP)
    except grpc.aio.AioRpcError as error:
        return f"{error.code().name} {error_details(error)[0]}"
    return "OK"


@pytest.fixture
async def playing(stubs, owner):
    """(user, product, session id): an owner with one achievement defined and a play session started."""
    _, achievements, playtime, _ = stubs
    user_id, product_id = owner
    await define(achievements, product_id, achievement("WIN"))
    started = await playtime.StartPlaytimeSession(
        ppb.StartPlaytimeSessionRequest(product_id=str(product_id), device_id="pc"),
        metadata=user_metadata(user_id),
    )
    return user_id, product_id, started.session_id


def calls(stubs, user_id, product_id, session_id, *, timeout: float | None = None) -> dict:
    library, achievements, playtime, settings = stubs
    me = user_metadata(user_id)
    p = str(product_id)
    return {
        "unlock": achievements.UpdateAchievementProgress(
            apb.UpdateAchievementProgressRequest(product_id=p, achievement_api_name="WIN", progress=1),
            metadata=me,
            timeout=timeout,
        ),
        "statuses": achievements.ListAchievementStatuses(
            apb.ListAchievementStatusesRequest(product_ids=[p]), metadata=me, timeout=timeout
        ),
        "heartbeat": playtime.RecordPlaytimeHeartbeat(
            ppb.RecordPlaytimeHeartbeatRequest(product_id=p, session_id=session_id),
            metadata=me,
            timeout=timeout,
        ),
        "start": playtime.StartPlaytimeSession(
            ppb.StartPlaytimeSessionRequest(product_id=p, device_id="deck"), metadata=me, timeout=timeout
        ),
        "library": library.ListLibraryItems(lpb.ListLibraryItemsRequest(), metadata=me, timeout=timeout),
        "settings": settings.GetGameSettings(
            gpb.GetGameSettingsRequest(product_id=p), metadata=me, timeout=timeout
        ),
    }


async def outcomes(pending: dict) -> dict[str, str]:
    answers = await asyncio.gather(*(outcome(call) for call in pending.values()))
    return dict(zip(pending, answers, strict=True))


async def test_with_redis_hung_every_rpc_answers_and_achievements_do_without_it(stubs, playing):
    user_id, product_id, session_id = playing
    with hung_stack_process("redis"):
        answers = await outcomes(calls(stubs, user_id, product_id, session_id))
    assert answers == {
        "unlock": "OK",  # the owner count from the database, the rate limit let through
        "statuses": "OK",
        "heartbeat": "UNAVAILABLE UNAVAILABLE",  # live play state is Redis' alone
        "start": "UNAVAILABLE UNAVAILABLE",
        "library": "OK",
        "settings": "OK",
    }
    _, achievements, _, _ = stubs
    [status] = (
        await achievements.ListAchievementStatuses(
            apb.ListAchievementStatusesRequest(product_ids=[str(product_id)]), metadata=user_metadata(user_id)
        )
    ).achievement_statuses
    assert status.is_unlocked


async def test_with_postgres_hung_every_rpc_answers_and_heartbeats_do_without_it(stubs, playing, target):
    user_id, product_id, session_id = playing
    with hung_postgres():
        answers = await outcomes(calls(stubs, user_id, product_id, session_id))
    assert answers == {
        "unlock": "UNAVAILABLE UNAVAILABLE",
        "statuses": "UNAVAILABLE UNAVAILABLE",
        "heartbeat": "OK",  # Redis only
        "start": "UNAVAILABLE UNAVAILABLE",
        "library": "UNAVAILABLE UNAVAILABLE",
        "settings": "UNAVAILABLE UNAVAILABLE",
    }
    await wait_serving(target)
    answers = await outcomes(calls(stubs, user_id, product_id, session_id))
    assert set(answers.values()) == {"OK"}, answers  # the pools replaced what the hang broke

    # The failures were logged, the statements' bound parameters (the product id) never.
    logged = (ROOT / ".local" / LOG).read_text(errors="replace")
    assert "dependency unavailable" in logged
    assert str(product_id) not in logged


@pytest.mark.parametrize("hang", ["redis", "postgres"])
async def test_a_call_with_a_deadline_shorter_than_the_bounds_hears_unavailable_before_it(
    stubs, playing, hang
):
    """The server answers by the client's deadline (less a margin), not after its own 2 s bounds: the
    client hears UNAVAILABLE, never DEADLINE_EXCEEDED."""
    user_id, product_id, session_id = playing
    hung = hung_stack_process("redis") if hang == "redis" else hung_postgres()
    with hung:
        pending = calls(stubs, user_id, product_id, session_id, timeout=BOUND / 2)
        answer = await outcome(pending.pop("heartbeat" if hang == "redis" else "library"))
        for call in pending.values():
            call.cancel()
    assert answer == "UNAVAILABLE UNAVAILABLE"
