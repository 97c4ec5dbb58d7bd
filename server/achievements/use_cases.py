"""Achievement use cases: definition upserts, progress reports (with the exactly-once unlock), listings."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.achievements import repository
from server.achievements.rules import Definition, Progress, Status, merge_progress, status_of, unlock_rate
from server.core import replay
from server.core.db import Db
from server.core.deps import Deps
from server.core.errors import NotFound
from server.core.events.cloudevents import rfc3339
from server.core.pagination import (
    decode_page_token,
    encode_page_token,
    invalid_page_token,
    query_fingerprint,
)
from server.core.replay import request_key
from server.core.uow import UnitOfWork
from server.library.entitlements import owned_product_ids, owner_counts, require_owned

ACHIEVEMENT_UNLOCKED = "com.platform.library.achievement.unlocked.v1"
ACHIEVEMENT_UNLOCKED_NOTIFICATION = "achievementUnlocked"


@dataclass(frozen=True, slots=True)
class ProgressResult:
    status: Status
    newly_unlocked: bool


@dataclass(frozen=True, slots=True)
class StatusPage:
    statuses: list[Status]
    next_page_token: str
    total_size: int


async def upsert_definitions(deps: Deps, product_id: uuid.UUID, definitions: list[Definition]) -> int:
    async with deps.uow() as uow:
        count = await upsert_definitions_in(uow, product_id, definitions)
        await uow.commit()
    return count


async def upsert_definitions_in(uow: UnitOfWork, product_id: uuid.UUID, definitions: list[Definition]) -> int:
    """Inside the caller's unit of work (UpsertAchievementDefinitions, the catalog consumer)."""
    if not definitions:
        return 0
    return await repository.upsert_definitions(uow.session, product_id, definitions)


async def update_progress(
    deps: Deps,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    api_name: str,
    reported: int,
    request_id: uuid.UUID | None,
) -> ProgressResult:
    """Records an absolute progress report; the unlocking call alone emits the event and notification.

    With a request_id the first response is stored in the same transaction, and a replay (same user and
    request_id, whatever the other fields say) returns it unchanged. Failed calls store nothing, so a retry
    of one runs afresh.
    """
    key = request_key(user_id, "UpdateAchievementProgress", request_id)
    async with deps.uow() as uow:
        db = uow.db
        if (first := await replay.claim(uow, key, ProgressResult)) is not None:
            return first
        await require_owned(db, user_id, product_id)
        row = await repository.status_row(db, user_id, product_id, api_name)
        if row is None:
            raise NotFound("no such achievement for the product", reason="ACHIEVEMENT_NOT_FOUND")
        change = merge_progress(row.progress, reported, row.definition.max_progress)
        newly_unlocked = False
        if change.changed:
            now = deps.clock()
            newly_unlocked = await repository.record_progress(db, user_id, product_id, api_name, change, now)
            if newly_unlocked:
                _announce_unlock(uow, user_id, row.definition, now)
            # Re-read: the stored state (and the unlock counter) is whatever the conditional upsert left.
            row = await repository.status_row(db, user_id, product_id, api_name)
            assert row is not None  # definitions are never deleted
        [status] = await _merge(db, user_id, [product_id], [row], owned={product_id})
        result = ProgressResult(status=status, newly_unlocked=newly_unlocked)
        await replay.remember(uow, key, result)
        await uow.commit()
    return result


def _announce_unlock(uow: UnitOfWork, user_id: uuid.UUID, definition: Definition, when: datetime) -> None:
    timestamp = rfc3339(when)
    uow.add_event(
        ACHIEVEMENT_UNLOCKED,
        user_id,
        {
            "userId": str(user_id),
            "productId": definition.product_id,
            "achievementApiName": definition.api_name,
            "unlockedTimestamp": timestamp,
        },
    )
    uow.notify(
        user_id,
        ACHIEVEMENT_UNLOCKED_NOTIFICATION,
        {
            "productId": definition.product_id,
            "achievementId": definition.api_name,
            "achievementName": definition.display_name,
            "timestamp": timestamp,
        },
    )


async def list_statuses(
    deps: Deps, user_id: uuid.UUID, product_ids: list[uuid.UUID], page_size: int, page_token: str
) -> StatusPage:
    fingerprint = query_fingerprint("achievement-statuses", [str(p) for p in product_ids])
    after = _cursor(decode_page_token(page_token, fingerprint))
    async with deps.uow.read() as db:
        rows, total = await repository.status_page(db, user_id, product_ids, after=after, limit=page_size + 1)
        page = rows[:page_size]
        statuses = await _merge(db, user_id, product_ids, page)
    next_token = ""
    if len(rows) > page_size:
        last = page[-1]
        next_token = encode_page_token(
            [last.position, last.definition.display_order, last.definition.api_name], fingerprint
        )
    return StatusPage(statuses=statuses, next_page_token=next_token, total_size=total)


def _cursor(cursor: list[Any] | None) -> tuple[int, int, str] | None:
    if cursor is None:
        return None
    match cursor:
        case [int(position), int(order), str(api_name)]:
            return position, order, api_name
    raise invalid_page_token()


async def _merge(
    db: Db,
    user_id: uuid.UUID,
    product_ids: list[uuid.UUID],
    rows: list[repository.StatusRow],
    *,
    owned: set[uuid.UUID] | None = None,
) -> list[Status]:
    """Statuses with unlock rates over current owners (counted as grants and revokes commit); progress
    in products the caller no longer owns shows as zero (the contract lists unowned products with zero
    progress). `owned`: the products the
    caller is already known to own, instead of looking them up."""
    if owned is None:
        owned = await owned_product_ids(db, user_id, product_ids)
    owners = await owner_counts(db, product_ids)
    # by the definitions' product id text: a few products per call, many rows
    owned_text = {str(p) for p in owned}
    owners_text = {str(p): n for p, n in owners.items()}
    statuses = []
    for row in rows:
        product_id = row.definition.product_id
        progress = row.progress if product_id in owned_text else Progress()
        rate = unlock_rate(row.unlocked_count, owners_text.get(product_id, 0))
        statuses.append(status_of(row.definition, progress, rate))
    return statuses
