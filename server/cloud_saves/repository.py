"""SQL of cloud saves. Every change to a user's saves of one product runs after `lock_owner`, so quota,
version numbers and conflict detection are decided by one transaction at a time per (user, product).

The save sync (upload URL + confirm) is SQL text on psycopg (`uow.db`; docs/ARCHITECTURE.md, "Database
access"), its rows plain `SaveRecord`s, and it waits for as few answers as it can: the statements it needs
together go in one pipeline (`lock_and_usage`, `locked_with_head`), and its writes, in a repository made
with `writes_with_commit`, go with the commit (`UnitOfWork.defer`). The other use cases (conflicts, restore,
the sweeper) keep the ORM rows they load and change."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.cloud_saves.rules import COMMITTED, CONFLICT, HELD, PENDING
from server.cloud_saves.tables import ObjectDeletion, SaveGameRow
from server.core.db import Db
from server.core.uow import UnitOfWork

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


@dataclass(slots=True)
class SaveRecord:
    """A save game row as the sync reads it: SaveGameRow's columns (all the use cases read), no ORM
    identity; what a confirm changes is written back by `settle`."""

    id: uuid.UUID
    user_id: uuid.UUID
    product_id: uuid.UUID
    slot_name: str
    status: str
    version_number: int | None
    base_version: int
    file_size_bytes: int
    file_hash_sha256: str
    s3_object_key: str
    client_modified_at: datetime
    server_uploaded_at: datetime | None
    device_id: str
    playtime_seconds: int | None
    progress_percentage: float | None
    description: str
    conflict_policy: int
    auto_resolved: bool
    reserved_until: datetime
    updated_at: datetime


async def upload(db: Db, user_id: uuid.UUID, savegame_id: uuid.UUID) -> Upload | None:
    """What a confirm checks before it takes any lock (a read unit's `Db`): the caller's save game, read
    lightly; another user's is None, exactly like an absent one."""
    found = await db.one(_UPLOAD, (savegame_id, user_id))
    return None if found is None else Upload(*found)


class SaveRepository:
    """`writes_with_commit`: `prune`, `queue_deletion`, `forget`, `insert` and `settle` are sent with the
    unit's commit (nothing the use case reads after them depends on them)."""

    def __init__(self, uow: UnitOfWork, *, writes_with_commit: bool = False):
        self._uow = uow
        self.db = uow.db
        self._deferred = writes_with_commit

    @property
    def session(self) -> AsyncSession:
        return self._uow.session

    async def _write(self, sql: str, params: Any) -> None:
        if self._deferred:
            self._uow.defer(sql, params)
        else:
            await (await self._db()).execute(sql, params)

    async def lock_owner(self, user_id: uuid.UUID, product_id: uuid.UUID) -> None:
        """Takes the (user, product) row lock, creating the row on first use, in one statement."""
        await self.db.execute(_LOCK_OWNER, (user_id, product_id))

    async def lock_and_usage(
        self,
        user_id: uuid.UUID,
        product_id: uuid.UUID,
        now: datetime,
        *,
        first: Callable[[Db], Awaitable[None]] | None = None,
    ) -> Usage:
        """`lock_owner`, then `usage` under the lock, in one round trip, with the transaction's BEGIN and
        whatever `first` sends (it queues statements of its own in the same pipeline)."""
        conn = self.db.conn
        async with conn.pipeline():
            if first is not None:
                await first(self.db)
            await conn.execute(_LOCK_OWNER, (user_id, product_id))
            rows = await conn.execute(_USAGE, {"user_id": user_id, "product_id": product_id, "now": now})
        return _usage(await rows.fetchall())

    async def get(
        self, user_id: uuid.UUID, savegame_id: uuid.UUID, *, lock: bool = False
    ) -> SaveGameRow | None:
        """The caller's save game; another user's is None, exactly like an absent one. `lock`: FOR UPDATE,
        and refreshed (the session may hold an older read of the row)."""
        return await self.session.scalar(
            _GET_LOCKED if lock else _GET, {"savegame_id": savegame_id, "user_id": user_id}
        )

    async def insert(self, **values) -> None:
        """Inserts a save game row from its column values (no ORM object: the upload URL's reservation is
        written and never read back in its transaction)."""
        await self._write(_INSERT, values)

    async def locked_with_head(
        self, user_id: uuid.UUID, savegame_id: uuid.UUID, product_id: uuid.UUID, slot_name: str
    ) -> tuple[SaveRecord | None, SaveRecord | None]:
        """Takes the owner lock, then reads the save game locked, with the head of the slot it was reserved
        for (a pending row keeps its slot for good), in one round trip. The head row is locked too:
        harmless, as every writer of the slot holds the owner lock anyway."""
        row = head = None
        conn = self.db.conn
        async with conn.pipeline():
            await conn.execute(_LOCK_OWNER, (user_id, product_id))
            found = await conn.execute(
                _LOCKED_WITH_HEAD,
                {"savegame_id": savegame_id, "user_id": user_id, "product_id": product_id, "slot": slot_name},
            )
        for *columns, is_head in await found.fetchall():
            record = SaveRecord(*columns)
            if record.id == savegame_id:
                row = record
            if is_head:
                head = record
        return row, head

    async def settle(self, row: SaveRecord) -> None:
        """Writes back what a confirm decided about `row` (committed, a conflict candidate, discarded)."""
        await self._write(
            _SETTLE,
            (
                row.status,
                row.version_number,
                row.server_uploaded_at,
                row.auto_resolved,
                row.updated_at,
                row.id,
            ),
        )

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
        """The unit's connection, the session's changes (if any) flushed first: the reads below go straight
        to the driver, which does not autoflush."""
        await self._uow.flush()
        return self.db

    async def shown(
        self, user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str | None = None
    ) -> list[tuple]:
        return await shown(await self._db(), user_id, product_id, slot_name)

    async def usage(self, user_id: uuid.UUID, product_id: uuid.UUID, now: datetime) -> Usage:
        return await usage(await self._db(), user_id, product_id, now)

    async def slot_in_use(
        self, user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str, now: datetime
    ) -> bool:
        params = {"user_id": user_id, "product_id": product_id, "slot_name": slot_name, "now": now}
        return await (await self._db()).value(_SLOT_IN_USE, params) is not None

    def add(self, row: SaveGameRow) -> None:
        self.session.add(row)

    async def forget(self, row: SaveGameRow | SaveRecord, *, delete_after: datetime) -> None:
        """Deletes the row and queues its object for deletion (no earlier than its reservation), in this
        transaction, in one statement."""
        if isinstance(row, SaveGameRow):
            self.session.expunge(row)  # deleted by SQL: the session must not write it back
        await self._write(_FORGET, {"id": row.id, "delete_after": delete_after})

    async def queue_deletion(self, key: str, *, delete_after: datetime) -> None:
        await self._write(_QUEUE_DELETION, (key, delete_after))

    async def prune(
        self, user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str, *, below: int, now: datetime
    ) -> None:
        """Deletes the slot's committed versions numbered below `below` and queues their objects, in one
        statement."""
        params = {"user_id": user_id, "product_id": product_id, "slot": slot_name, "below": below, "now": now}
        await self._write(_PRUNE, params)

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
    return _usage(await db.all(_USAGE, {"user_id": user_id, "product_id": product_id, "now": now}))


def _slot(user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str):
    return S.user_id == user_id, S.product_id == product_id, S.slot_name == slot_name


def _usage(rows) -> Usage:
    usage = Usage(0, set(), {})
    for name, total, count, head in rows:
        usage.used_bytes += int(total)
        if count:
            usage.slot_names.add(name)
        if head is not None:
            usage.head_versions[name] = head
    return usage


_LOCK_OWNER = (
    "INSERT INTO savegame_owners (user_id, product_id) VALUES (%s, %s)"
    " ON CONFLICT (user_id, product_id) DO UPDATE SET user_id = excluded.user_id"
)
_UPLOAD = f"SELECT {', '.join(Upload.__dataclass_fields__)} FROM savegames WHERE id = %s AND user_id = %s"
# what a reservation writes (the rest keeps its defaults until the confirm)
_RESERVATION_COLUMNS = (
    "id",
    "user_id",
    "product_id",
    "slot_name",
    "status",
    "base_version",
    "file_size_bytes",
    "file_hash_sha256",
    "s3_object_key",
    "client_modified_at",
    "device_id",
    "playtime_seconds",
    "progress_percentage",
    "description",
    "conflict_policy",
    "reserved_until",
    "updated_at",
)
_RECORD_COLUMNS = ", ".join(SaveRecord.__dataclass_fields__)
_INSERT = (
    f"INSERT INTO savegames ({', '.join(_RESERVATION_COLUMNS)})"
    f" VALUES ({', '.join(f'%({name})s' for name in _RESERVATION_COLUMNS)})"
)
_GET = select(S).where(S.id == bindparam("savegame_id"), S.user_id == bindparam("user_id"))
_GET_LOCKED = _GET.with_for_update().execution_options(populate_existing=True)
_SLOT = (
    S.user_id == bindparam("user_id"),
    S.product_id == bindparam("product_id"),
    S.slot_name == bindparam("slot_name"),
)
_HEAD = select(S).where(*_SLOT, S.status == COMMITTED).order_by(S.version_number.desc()).limit(1)
# The slot's head as a scalar subquery (an InitPlan: the OR below stays two index lookups).
_HEAD_ID = (
    "(SELECT id FROM savegames WHERE user_id = %(user_id)s AND product_id = %(product_id)s"
    f" AND slot_name = %(slot)s AND status = '{COMMITTED}' ORDER BY version_number DESC LIMIT 1)"
)
_LOCKED_WITH_HEAD = (
    f"SELECT {_RECORD_COLUMNS}, id = {_HEAD_ID} AS is_head FROM savegames"
    f" WHERE (id = %(savegame_id)s AND user_id = %(user_id)s) OR id = {_HEAD_ID} FOR UPDATE"
)
_SETTLE = (
    "UPDATE savegames SET status = %s, version_number = %s, server_uploaded_at = %s, auto_resolved = %s,"
    " updated_at = %s WHERE id = %s"
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
_SLOT_IN_USE = (
    "SELECT 1 FROM savegames WHERE user_id = %(user_id)s AND product_id = %(product_id)s"
    f" AND slot_name = %(slot_name)s AND {_HELD_NOW_SQL} LIMIT 1"
)
_USAGE = (
    "SELECT slot_name,"
    f" coalesce(sum(file_size_bytes) FILTER (WHERE {_HELD_NOW_SQL}), 0),"
    f" count(*) FILTER (WHERE {_HELD_NOW_SQL}),"
    f" max(version_number) FILTER (WHERE status = '{COMMITTED}')"
    " FROM savegames WHERE user_id = %(user_id)s AND product_id = %(product_id)s GROUP BY slot_name"
)
# Queued objects are deleted no earlier than any reservation of theirs (a PUT may still be in flight).
_ENQUEUE = (
    " INSERT INTO savegame_object_deletions (s3_object_key, delete_after)"
    " SELECT s3_object_key, delete_after FROM gone"
    " ON CONFLICT (s3_object_key) DO UPDATE"
    " SET delete_after = greatest(savegame_object_deletions.delete_after, excluded.delete_after)"
)
_QUEUE_DELETION = "WITH gone (s3_object_key, delete_after) AS (VALUES (%s::text, %s::timestamptz))" + _ENQUEUE
_FORGET = (
    "WITH gone AS (DELETE FROM savegames WHERE id = %(id)s RETURNING s3_object_key,"
    " greatest(CAST(%(delete_after)s AS timestamptz), reserved_until) AS delete_after)" + _ENQUEUE
)
# rowcount is not read: the statement may go with the commit
_PRUNE = (
    "WITH gone AS ("
    " DELETE FROM savegames WHERE user_id = %(user_id)s AND product_id = %(product_id)s"
    f" AND slot_name = %(slot)s AND status = '{COMMITTED}' AND version_number < %(below)s"
    " RETURNING s3_object_key, greatest(CAST(%(now)s AS timestamptz), reserved_until) AS delete_after)"
    + _ENQUEUE
)
