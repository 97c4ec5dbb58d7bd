"""Playtime under family sharing (SPEC §6): a library is played by one person at a time.

A play session uses the library its game comes from: the lender's for a borrowed game, else the player's
own. While anyone else plays from that library (the owner any game, a borrower a game borrowed from it),
a borrower cannot start: FAILED_PRECONDITION FAMILY_SHARED_GAME_IN_USE. When the owner starts while a
borrower plays, the borrower is notified (`familySharedGameReclaimed`) and credited for a grace period
(FAMILY_RECLAIM_GRACE_SECONDS) only: the deadline is kept in the session's live state, where the
heartbeat script stops crediting at it; the first heartbeat after it, or the reaper at it, ends the
session.
Borrowers keep their own playtime: sessions and totals are always the player's.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from server.core.errors import FailedPrecondition
from server.core.events.cloudevents import rfc3339
from server.core.uow import UnitOfWork
from server.library import family_use_cases
from server.library.family_rules import RECLAIMED
from server.library.family_views import LibraryUse
from server.playtime import repository, rules
from server.playtime.live import REAP_SCHEDULE, LiveSessions


class GameInUse(FailedPrecondition):
    reason = "FAMILY_SHARED_GAME_IN_USE"


async def claim_library(
    uow: UnitOfWork,
    live: LiveSessions,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    now: datetime,
    policy: rules.AccrualPolicy,
    grace: timedelta,
) -> None:
    """Before a session of the user's product starts (ownership checked here: PRODUCT_ACCESS_DENIED):
    refuses a borrower while the library is in use, and starts the grace period of borrowers playing
    from the owner's library when the owner starts."""
    use = await family_use_cases.library_use_in(uow, user_id, product_id)
    if not use.shared:
        return
    others = [
        s for s in await repository.active_sessions_of_users(uow.db, _players(use)) if s.user_id != user_id
    ]
    records = await live.get_many(s.id for s in others)
    playing = [
        s
        for s in others
        if _plays_from(use, s)
        and s.id in records
        and not rules.is_silent(records[s.id].state.last_heartbeat, now, policy)
        and not records[s.id].reclaim_over(now)
    ]
    if use.lender is not None:
        if playing:
            raise GameInUse(
                "someone is playing from the lender's library; try again when they stop",
                metadata={"productId": str(product_id), "lenderUserId": str(use.lender)},
            )
        return
    until = now + grace
    for session in playing:
        if await live.reclaim(session.id, until):
            await live.due_by(REAP_SCHEDULE, {session.id: until})  # the reaper ends it at the deadline
            uow.notify(
                session.user_id,
                RECLAIMED,
                {
                    "sessionId": str(session.id),
                    "productId": str(session.product_id),
                    "lenderUserId": str(user_id),
                    "graceEndsAt": rfc3339(until),
                    "graceSeconds": int(grace.total_seconds()),
                },
            )


def _players(use: LibraryUse) -> list[uuid.UUID]:
    return [use.owner, *use.borrowed]


def _plays_from(use: LibraryUse, session: repository.ActiveSession) -> bool:
    """Whether the session uses the library: any game of its owner, a borrowed game of a borrower."""
    return session.user_id == use.owner or session.product_id in use.borrowed.get(session.user_id, ())
