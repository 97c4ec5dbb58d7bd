"""The owner reclaiming a family-shared game mid-session (SPEC §6), with the playtime use cases in this
process under a controlled clock (server/core/clock.py) against the real PostgreSQL and Redis; the links
are made over gRPC, and the notification travels the real outbox → relay → Redis stream path of the
session's server. The clock starts at the real time and only moves forward, so the server's own reaper
(on the real clock) never judges these sessions silent; a reaper pass in this process, on the controlled
clock, also ends what earlier tests left active on the shared stack (as it would hours later)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from library.v1 import library_service_pb2_grpc
from server.core.db import create_engine, create_sessionmaker
from server.core.deps import Deps
from server.core.s3 import ObjectStore
from server.core.uow import UnitOfWorkFactory, notification_stream
from server.library.tables import LibraryItem
from server.playtime.sharing import GameInUse
from server.playtime.sweeper import SessionSweeper
from server.playtime.tables import STATUS_REAPED, PlaytimeSession
from server.playtime.use_cases import Playtime
from tests.support.family import linked, products
from tests.support.library import grant_entitlements
from tests.support.waiting import wait_until

INTERVAL = timedelta(seconds=60)  # the default heartbeat interval
GRACE = timedelta(seconds=300)  # the default grace period


class Clock:
    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.now = now.replace(microsecond=now.microsecond // 1000 * 1000)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def in_process(settings, redis):
    engine = create_engine(settings.database_url, pool_size=2)
    clock = Clock()
    deps = Deps(
        settings,
        UnitOfWorkFactory(create_sessionmaker(engine), "/test", lambda: None),
        redis,
        ObjectStore(settings),  # never opened: playtime does not touch S3
        clock,
    )
    yield deps, clock
    await engine.dispose()


async def arranged(library) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID]:
    """(lender, borrower, the borrowed game, another game of the lender) with an active link."""
    lender, borrower = uuid.uuid4(), uuid.uuid4()
    game, other = await products(library, ("game", None), ("game", None))
    await grant_entitlements(library, lender, game, other)
    await linked(library, lender, borrower)
    return lender, borrower, game, other


@pytest.fixture
def library(channel) -> library_service_pb2_grpc.LibraryServiceStub:
    return library_service_pb2_grpc.LibraryServiceStub(channel)


async def session_row(sessions, session_id: uuid.UUID) -> PlaytimeSession:
    async with sessions() as s:
        return await s.scalar(select(PlaytimeSession).where(PlaytimeSession.id == session_id))


async def test_the_owner_reclaims_the_borrower_is_notified_and_credited_only_for_the_grace_period(
    library,
    in_process,
    sessions,
    redis,
):
    deps, clock = in_process
    playtime = Playtime(deps)
    lender, borrower, game, other = await arranged(library)
    t0 = clock.now
    session = await playtime.start(borrower, game, "pc", None)
    for _ in range(2):
        clock.now += INTERVAL
        await playtime.heartbeat(borrower, session.session_id, game)

    clock.now += INTERVAL / 2
    reclaimed_at = clock.now
    await playtime.start(lender, other, "desk", None)  # the owner plays: the borrower's grace begins

    async def notified() -> list[dict]:
        entries = await redis.xrange(notification_stream(borrower))
        return [json.loads(f[b"payload"]) for _, f in entries if f[b"type"] == b"familySharedGameReclaimed"]

    await wait_until(notified, what="the familySharedGameReclaimed notification on the borrower's stream")
    [note] = await notified()
    assert note["sessionId"] == str(session.session_id) and note["productId"] == str(game)
    assert note["lenderUserId"] == str(lender) and note["graceSeconds"] == 300
    assert datetime.fromisoformat(note["graceEndsAt"].replace("Z", "+00:00")) == reclaimed_at + GRACE
    with pytest.raises(GameInUse):  # while the owner plays, the borrower cannot start anew
        await playtime.start(borrower, other, "pc-2", None)

    while clock.now + INTERVAL <= reclaimed_at + GRACE:  # heartbeats inside the grace period count
        clock.now += INTERVAL
        await playtime.heartbeat(borrower, session.session_id, game)
    clock.now = reclaimed_at + GRACE + timedelta(seconds=30)
    with pytest.raises(GameInUse):  # after it: not credited, and the session is over
        await playtime.heartbeat(borrower, session.session_id, game)

    row = await session_row(sessions, session.session_id)
    deadline = reclaimed_at + GRACE  # the late heartbeat is credited up to the deadline, not beyond
    assert (row.status, row.ended_at) == (STATUS_REAPED, deadline)
    assert row.credited_seconds == int((deadline - t0).total_seconds())
    async with sessions() as s:
        item = await s.scalar(
            select(LibraryItem).where(LibraryItem.user_id == borrower, LibraryItem.product_id == game)
        )
        lenders = await s.scalar(
            select(LibraryItem).where(LibraryItem.user_id == lender, LibraryItem.product_id == game)
        )
    assert item.total_playtime_seconds == row.credited_seconds  # the borrower's own playtime
    assert lenders.total_playtime_seconds == 0


async def test_a_reclaimed_borrower_who_goes_quiet_is_reaped_at_the_deadline_credited_up_to_it(
    library,
    in_process,
    sessions,
):
    deps, clock = in_process
    playtime = Playtime(deps)
    lender, borrower, game, other = await arranged(library)
    t0 = clock.now
    session = await playtime.start(borrower, game, "pc", None)
    clock.now += INTERVAL
    await playtime.start(lender, other, "desk", None)
    deadline = clock.now + GRACE
    while clock.now + INTERVAL < deadline:
        clock.now += INTERVAL
        await playtime.heartbeat(borrower, session.session_id, game)
    clock.now = last = deadline - timedelta(seconds=10)
    await playtime.heartbeat(borrower, session.session_id, game)
    clock.now = deadline + timedelta(seconds=1)  # not silent (11 s), but the grace period is over
    await SessionSweeper(deps).reap_due()
    row = await session_row(sessions, session.session_id)
    assert row.status == STATUS_REAPED and row.ended_at == last
    assert row.credited_seconds == int((last - t0).total_seconds())
