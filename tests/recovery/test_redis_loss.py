"""Losing Redis (killed, its AOF and RDB files deleted) on the drill's stack: an active play session keeps
what its last checkpoint wrote to Postgres (so it loses at most one checkpoint interval), and the running
service recovers by itself once Redis is back (`make stack-up` restarts it, as a supervisor would)."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc

from library.v1 import library_service_pb2_grpc, playtime_service_pb2_grpc
from library.v1 import playtime_service_pb2 as pb
from tests.recovery import drill
from tests.support.auth import user_metadata
from tests.support.grpc_errors import failure
from tests.support.library import grant_entitlements, upsert_products
from tests.support.processes import wait_serving

CHECKPOINT_SECONDS = 1.0


async def checkpointed(settings, session_id: str, at_least: int, timeout: float = 60) -> int:
    """Waits until a checkpoint credited at least `at_least` seconds of the session to Postgres."""
    deadline = time.monotonic() + timeout
    while True:
        with drill.service_db(settings) as conn:
            credited = conn.execute(
                "SELECT credited_seconds FROM playtime_sessions"
                " WHERE id = %s AND checkpointed_at IS NOT NULL",
                (session_id,),
            ).fetchone()
        if credited is not None and credited[0] >= at_least:
            return credited[0]
        assert time.monotonic() < deadline, f"no checkpoint of {at_least}s within {timeout}s"
        await asyncio.sleep(0.2)


async def test_losing_redis_costs_an_active_session_at_most_what_came_after_its_last_checkpoint(settings):
    user, game = uuid.uuid4(), uuid.uuid4()
    metadata = user_metadata(user)
    env = {"PLAYTIME_CHECKPOINT_SECONDS": str(CHECKPOINT_SECONDS)}
    async with drill.service(settings, **env) as target, grpc.aio.insecure_channel(target) as channel:
        library = library_service_pb2_grpc.LibraryServiceStub(channel)
        playtime = playtime_service_pb2_grpc.PlaytimeTrackerServiceStub(channel)
        await upsert_products(library, {game: "Game"})
        await grant_entitlements(library, user, game)
        start = pb.StartPlaytimeSessionRequest(product_id=str(game), device_id="pc")
        started = time.monotonic()  # before the server's start, so `played` covers what it credits
        session = (await playtime.StartPlaytimeSession(start, metadata=metadata)).session_id
        heartbeat = pb.RecordPlaytimeHeartbeatRequest(product_id=str(game), session_id=session)
        for _ in range(2):
            await asyncio.sleep(1.1)
            await playtime.RecordPlaytimeHeartbeat(heartbeat, metadata=metadata)
        saved = await checkpointed(settings, session, at_least=2)
        await asyncio.sleep(1.1)
        await playtime.RecordPlaytimeHeartbeat(heartbeat, metadata=metadata)
        played = time.monotonic() - started

        drill.lose_redis()
        drill.script("scripts/stack-up.sh")
        await wait_serving(target, timeout=180)

        # The session Redis forgot: its heartbeats are refused, so the game starts a new one.
        assert await failure(playtime.RecordPlaytimeHeartbeat(heartbeat, metadata=metadata)) == (
            grpc.StatusCode.NOT_FOUND,
            "SESSION_NOT_FOUND",
            [],
        )
        kept = await drill.total_playtime(playtime, user, game)
        # what the last checkpoint wrote is kept; only what came after it (one heartbeat here) is lost
        assert saved <= kept <= played
        restarted = await playtime.StartPlaytimeSession(start, metadata=metadata)
        assert restarted.session_id != session and not restarted.resumed
        await asyncio.sleep(1.1)
        ended = await playtime.EndPlaytimeSession(
            pb.EndPlaytimeSessionRequest(product_id=str(game), session_id=restarted.session_id),
            metadata=metadata,
        )
        assert ended.credited_duration_seconds >= 1
        assert ended.total_playtime_seconds == kept + ended.credited_duration_seconds
