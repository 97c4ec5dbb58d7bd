"""SQL of cloud saves. Every change to a user's saves of one product runs after `lock_owner`, so quota,
version numbers and conflict detection are decided by one transaction at a time per (user, product)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.cloud_saves.rules import COMMITTED, CONFLICT, HELD, PENDING
from server.cloud_saves.tables import ObjectDeletion, SaveGameOwner, SaveGameRow

S = SaveGameRow


class SaveRepository:
    def __init__(self, session: AsyncSession):
        self.session = session

    async def lock_owner(self, user_id: uuid.UUID, product_id: uuid.UUID) -> None:
        """Takes the (user, product) row lock, creating the row on first use, in one statement."""
        stmt = insert(SaveGameOwner).values(user_id=user_id, product_id=product_id)
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[SaveGameOwner.user_id, SaveGameOwner.product_id],
                set_={"user_id": stmt.excluded.user_id},
            )
        )

    async def get(
        self, user_id: uuid.UUID, savegame_id: uuid.UUID, *, lock: bool = False
    ) -> SaveGameRow | None:
        """The caller's save game; another user's is None, exactly like an absent one."""
        query = select(S).where(S.id == savegame_id, S.user_id == user_id)
        if lock:
            query = query.with_for_update()
        return await self.session.scalar(query)

    async def head(self, user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str) -> SaveGameRow | None:
        return await self.session.scalar(
            select(S)
            .where(*_slot(user_id, product_id, slot_name), S.status == COMMITTED)
            .order_by(S.version_number.desc())
            .limit(1)
        )

    async def version(
        self, user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str, version_number: int
    ) -> SaveGameRow | None:
        return await self.session.scalar(
            select(S).where(
                *_slot(user_id, product_id, slot_name),
                S.status == COMMITTED,
                S.version_number == version_number,
            )
        )

    async def shown(
        self, user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str | None = None
    ) -> Sequence[SaveGameRow]:
        """Committed versions (newest first) and conflict candidates (oldest first) by slot name."""
        query = select(S).where(
            S.user_id == user_id, S.product_id == product_id, S.status.in_((COMMITTED, CONFLICT))
        )
        if slot_name is not None:
            query = query.where(S.slot_name == slot_name)
        return (
            await self.session.scalars(
                query.order_by(S.slot_name, S.version_number.desc().nulls_last(), S.server_uploaded_at, S.id)
            )
        ).all()

    async def usage(self, user_id: uuid.UUID, product_id: uuid.UUID, now: datetime) -> tuple[int, set[str]]:
        """(bytes held, slot names held): retained versions, conflict candidates, unexpired reservations."""
        rows = await self.session.execute(
            select(S.slot_name, func.sum(S.file_size_bytes))
            .where(S.user_id == user_id, S.product_id == product_id, _held(now))
            .group_by(S.slot_name)
        )
        by_slot = {name: int(total) for name, total in rows}
        return sum(by_slot.values()), set(by_slot)

    async def slot_in_use(
        self, user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str, now: datetime
    ) -> bool:
        found = await self.session.scalar(
            select(S.id).where(*_slot(user_id, product_id, slot_name), _held(now)).limit(1)
        )
        return found is not None

    def add(self, row: SaveGameRow) -> None:
        self.session.add(row)

    async def forget(self, row: SaveGameRow, *, delete_after: datetime) -> None:
        """Deletes the row and queues its object for deletion, in this transaction."""
        await self.queue_deletion(row.s3_object_key, delete_after=max(delete_after, row.reserved_until))
        await self.session.delete(row)

    async def queue_deletion(self, key: str, *, delete_after: datetime) -> None:
        stmt = insert(ObjectDeletion).values(s3_object_key=key, delete_after=delete_after)
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[ObjectDeletion.s3_object_key],
                set_={"delete_after": func.greatest(ObjectDeletion.delete_after, stmt.excluded.delete_after)},
            )
        )

    async def committed_versions(
        self, user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str
    ) -> Sequence[SaveGameRow]:
        return (
            await self.session.scalars(
                select(S).where(*_slot(user_id, product_id, slot_name), S.status == COMMITTED)
            )
        ).all()

    async def expired_reservations(self, now: datetime, limit: int) -> Sequence[SaveGameRow]:
        """Pending rows past their reservation, locked; rows another transaction holds are skipped."""
        return (
            await self.session.scalars(
                select(S)
                .where(S.status == PENDING, S.reserved_until <= now)
                .order_by(S.reserved_until)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()

    async def due_deletions(self, now: datetime, limit: int) -> Sequence[ObjectDeletion]:
        return (
            await self.session.scalars(
                select(ObjectDeletion)
                .where(ObjectDeletion.delete_after <= now)
                .order_by(ObjectDeletion.delete_after)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()

    async def drop_deletions(self, keys: Sequence[str]) -> None:
        await self.session.execute(delete(ObjectDeletion).where(ObjectDeletion.s3_object_key.in_(keys)))


def _slot(user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str):
    return S.user_id == user_id, S.product_id == product_id, S.slot_name == slot_name


def _held(now: datetime):
    return or_(
        S.status.in_([s for s in HELD if s != PENDING]), (S.status == PENDING) & (S.reserved_until > now)
    )
