"""SQL of cloud saves. Every change to a user's saves of one product runs after `lock_owner`, so quota,
version numbers and conflict detection are decided by one transaction at a time per (user, product).

The statements of the save sync (upload URL + confirm) are built once, with bound parameters: building
and cache-keying an ORM statement per call cost more CPU than running it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, delete, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.cloud_saves.rules import COMMITTED, CONFLICT, HELD, PENDING
from server.cloud_saves.tables import ObjectDeletion, SaveGameRow
from server.core.db import Db, db_of

S = SaveGameRow

# The columns a save game is shown from, in this order (use_cases.save_game reads them by position).
SHOWN_COLUMNS = (
    "id",
    "product_id",
    "slot_name",
    "status",
    "version_number",
    "base_version",
    "file_size_bytes",
    "file_hash_sha256",
    "client_modified_at",
    "server_uploaded_at",
    "device_id",
    "playtime_seconds",
    "progress_percentage",
    "description",
    "updated_at",
)


@dataclass
class Usage:
    used_bytes: int
    slot_names: set[str]  # slots holding anything (a reserved new slot counts)
    head_versions: dict[str, int]  # slot → its head's version number


@dataclass(frozen=True, slots=True)
class Upload:
    product_id: uuid.UUID
    slot_name: str
    status: str
    reserved_until: datetime
    s3_object_key: str
    file_size_bytes: int
    file_hash_sha256: str


class SaveRepository:
    def __init__(self, session: AsyncSession):
        self.session = session

    async def lock_owner(self, user_id: uuid.UUID, product_id: uuid.UUID) -> None:
        """Takes the (user, product) row lock, creating the row on first use, in one statement."""
        await self.session.execute(_LOCK_OWNER, {"user_id": user_id, "product_id": product_id})

    async def get(
        self, user_id: uuid.UUID, savegame_id: uuid.UUID, *, lock: bool = False
    ) -> SaveGameRow | None:
        """The caller's save game; another user's is None, exactly like an absent one. `lock`: FOR UPDATE,
        and refreshed (the session may hold an older read of the row)."""
        return await self.session.scalar(
            _GET_LOCKED if lock else _GET, {"savegame_id": savegame_id, "user_id": user_id}
        )

    async def upload(self, user_id: uuid.UUID, savegame_id: uuid.UUID) -> Upload | None:
        """What a confirm checks before it takes any lock: the caller's save game, read lightly (no ORM
        row); another user's is None, exactly like an absent one."""
        found = (
            await self.session.execute(_UPLOAD, {"savegame_id": savegame_id, "user_id": user_id})
        ).first()
        return None if found is None else Upload(*found)

    async def insert(self, **values) -> None:
        """Inserts a save game row from its column values (no ORM object: the upload URL's reservation is
        written and never read back in its transaction)."""
        await self.session.execute(_INSERT, values)

    async def locked_with_head(
        self, user_id: uuid.UUID, savegame_id: uuid.UUID, product_id: uuid.UUID, slot_name: str
    ) -> tuple[SaveGameRow | None, SaveGameRow | None]:
        """`get(lock=True)` and `head` of the slot the save game was reserved for (a pending row keeps its
        slot for good), in one statement. The head row is locked too: harmless, as every writer of the
        slot holds the owner lock anyway."""
        row = head = None
        params = {
            "savegame_id": savegame_id,
            "user_id": user_id,
            "product_id": product_id,
            "slot_name": slot_name,
        }
        for found, is_head in await self.session.execute(_LOCKED_WITH_HEAD, params):
            if found.id == savegame_id:
                row = found
            if is_head:
                head = found
        return row, head

    async def head(self, user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str) -> SaveGameRow | None:
        return await self.session.scalar(
            _HEAD, {"user_id": user_id, "product_id": product_id, "slot_name": slot_name}
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

    async def _db(self) -> Db:
        """The unit's connection as a Db, the session's changes flushed first: the reads below go straight
        to the driver, which does not autoflush."""
        await self.session.flush()
        return await db_of(self.session)

    async def shown(
        self, user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str | None = None
    ) -> list[tuple]:
        return await shown(await self._db(), user_id, product_id, slot_name)

    async def usage(self, user_id: uuid.UUID, product_id: uuid.UUID, now: datetime) -> Usage:
        return await usage(await self._db(), user_id, product_id, now)

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

    async def prune(
        self, user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str, *, below: int, now: datetime
    ) -> int:
        """Deletes the slot's committed versions numbered below `below` and queues their objects, in one
        statement."""
        result = await self.session.execute(
            _PRUNE,
            {
                "user_id": user_id,
                "product_id": product_id,
                "slot_name": slot_name,
                "below": below,
                "now": now,
            },
        )
        return result.rowcount

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


async def shown(
    db: Db, user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str | None = None
) -> list[tuple]:
    """Committed versions (newest first) and conflict candidates (oldest first) by slot name, as
    SHOWN_COLUMNS tuples."""
    if slot_name is None:
        return await db.all(_SHOWN, (user_id, product_id))
    return await db.all(_SHOWN_SLOT, (user_id, product_id, slot_name))


async def usage(db: Db, user_id: uuid.UUID, product_id: uuid.UUID, now: datetime) -> Usage:
    """What the user holds in the product (retained versions, conflict candidates, unexpired
    reservations) and each slot's head version, in one query."""
    found = Usage(0, set(), {})
    params = {"user_id": user_id, "product_id": product_id, "now": now}
    for name, total, count, head in await db.all(_USAGE, params):
        found.used_bytes += int(total)
        if count:
            found.slot_names.add(name)
        if head is not None:
            found.head_versions[name] = head
    return found


def _slot(user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str):
    return S.user_id == user_id, S.product_id == product_id, S.slot_name == slot_name


def _held(now):
    return or_(
        S.status.in_([s for s in HELD if s != PENDING]), (S.status == PENDING) & (S.reserved_until > now)
    )


_LOCK_OWNER = text(
    "INSERT INTO savegame_owners (user_id, product_id) VALUES (:user_id, :product_id)"
    " ON CONFLICT (user_id, product_id) DO UPDATE SET user_id = excluded.user_id"
)
_UPLOAD = select(*(getattr(S, name) for name in Upload.__dataclass_fields__)).where(
    S.id == bindparam("savegame_id"), S.user_id == bindparam("user_id")
)
_INSERT = insert(S.__table__)
_GET = select(S).where(S.id == bindparam("savegame_id"), S.user_id == bindparam("user_id"))
_GET_LOCKED = _GET.with_for_update().execution_options(populate_existing=True)
_SLOT = (
    S.user_id == bindparam("user_id"),
    S.product_id == bindparam("product_id"),
    S.slot_name == bindparam("slot_name"),
)
_HEAD = select(S).where(*_SLOT, S.status == COMMITTED).order_by(S.version_number.desc()).limit(1)
_HEAD_ID = (
    select(S.id).where(*_SLOT, S.status == COMMITTED).order_by(S.version_number.desc()).limit(1)
).scalar_subquery()
_LOCKED_WITH_HEAD = (
    select(S, (S.id == _HEAD_ID).label("is_head"))
    .where(or_(and_(S.id == bindparam("savegame_id"), S.user_id == bindparam("user_id")), S.id == _HEAD_ID))
    .with_for_update()
    .execution_options(populate_existing=True)
)
_SHOWN_FROM = (
    f"SELECT {', '.join(SHOWN_COLUMNS)} FROM savegames"
    f" WHERE user_id = %s AND product_id = %s AND status IN ('{COMMITTED}', '{CONFLICT}')"
)
_SHOWN_ORDER = " ORDER BY slot_name, version_number DESC NULLS LAST, server_uploaded_at, id"
_SHOWN = _SHOWN_FROM + _SHOWN_ORDER
_SHOWN_SLOT = _SHOWN_FROM + " AND slot_name = %s" + _SHOWN_ORDER
_HELD_NOW_SQL = "(status IN ({}) OR (status = '{}' AND reserved_until > %(now)s))".format(
    ", ".join(f"'{s}'" for s in HELD if s != PENDING), PENDING
)
_USAGE = (
    "SELECT slot_name,"
    f" coalesce(sum(file_size_bytes) FILTER (WHERE {_HELD_NOW_SQL}), 0),"
    f" count(*) FILTER (WHERE {_HELD_NOW_SQL}),"
    f" max(version_number) FILTER (WHERE status = '{COMMITTED}')"
    " FROM savegames WHERE user_id = %(user_id)s AND product_id = %(product_id)s GROUP BY slot_name"
)
# The pruned rows' objects are queued in the same statement, each no earlier than its row's reservation
# (the same rule as `queue_deletion`); rowcount is the number of rows pruned.
_PRUNE = text(
    "WITH pruned AS ("
    " DELETE FROM savegames WHERE user_id = :user_id AND product_id = :product_id"
    f" AND slot_name = :slot_name AND status = '{COMMITTED}' AND version_number < :below"
    " RETURNING s3_object_key, greatest(CAST(:now AS timestamptz), reserved_until) AS delete_after)"
    " INSERT INTO savegame_object_deletions (s3_object_key, delete_after)"
    " SELECT s3_object_key, delete_after FROM pruned"
    " ON CONFLICT (s3_object_key) DO UPDATE"
    " SET delete_after = greatest(savegame_object_deletions.delete_after, excluded.delete_after)"
)
