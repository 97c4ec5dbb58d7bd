"""Unit of work: one database transaction around a use case, plus the events and notifications it emits.

Events and notifications are rows of the outbox written in the same transaction as the change, so a
committed change never loses them and a rolled-back one never emits them. After a commit the relay is
woken so delivery is prompt.

    async with uow_factory() as uow:
        uow.session.add(...)
        uow.add_event("com.platform.library.item.added.v1", user_id, {...})
        uow.notify(user_id, "achievementUnlocked", {...})
        await uow.commit()

`uow.db` (server.core.db.Db) and `uow.session` (the ORM) are one connection and one transaction: a
repository function takes whichever it needs (docs/ARCHITECTURE.md, "Database access"). A read-only use
case runs in `uow_factory.read()` instead: one autocommit connection, no BEGIN/COMMIT, no ORM. Each of its
statements sees the data committed when it starts, as each statement in a READ COMMITTED transaction does.

    async with uow_factory.read() as db:
        items = await repository.list_items(db, ...)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from psycopg import AsyncCursor
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from server.core import context, tracing
from server.core.db import Db
from server.core.events.channels import CHANNEL_KAFKA, CHANNEL_NOTIFICATION
from server.core.events.cloudevents import LIBRARY_EVENTS_TOPIC, make_cloud_event
from server.core.events.tables import OutboxMessage


def notification_stream(user_id: uuid.UUID | str) -> str:
    """The per-user Redis stream every relay instance reads for that user's WebSocket (SPEC §8)."""
    return f"notifications:{{{user_id}}}"  # hash tag: stream and its dedupe keys share a cluster slot


class UnitOfWork:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], source: str, on_commit: Callable[[], None]
    ):
        self._sessions = sessions
        self._source = source
        self._on_commit = on_commit
        self._messages: list[OutboxMessage] = []
        self._deferred: list[tuple[str, Any]] = []
        self._connection: AsyncConnection
        self._session: AsyncSession | None = None
        self.db: Db

    @property
    def session(self) -> AsyncSession:
        """The ORM session of this unit: on its connection, in its transaction; made when first used (most
        units of work never need one)."""
        if self._session is None:
            self._session = self._sessions(bind=self._connection)
        return self._session

    async def __aenter__(self) -> UnitOfWork:
        self._connection = await self._sessions.kw["bind"].connect()
        await self._connection.begin()
        self.db = Db((await self._connection.get_raw_connection()).driver_connection)
        self._session = None
        self._messages = []
        self._deferred = []
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if self._session is not None:
            await self._session.close()
        await self._connection.close()  # rolls back whatever was not committed

    def add_event(
        self,
        event_type: str,
        user_id: uuid.UUID | str,
        data: dict[str, Any],
        *,
        topic: str = LIBRARY_EVENTS_TOPIC,
    ) -> dict[str, Any]:
        event_id = uuid.uuid4()
        event = make_cloud_event(
            event_type=event_type,
            source=self._source,
            subject=str(user_id),
            data=data,
            correlation_id=context.current_request_id(),
            event_id=event_id,
            traceparent=tracing.current_traceparent(),
        )
        self._messages.append(
            OutboxMessage(id=event_id, channel=CHANNEL_KAFKA, topic=topic, key=str(user_id), payload=event)
        )
        return event

    def notify(self, user_id: uuid.UUID | str, message_type: str, payload: dict[str, Any]) -> None:
        message_id = uuid.uuid4()
        self._messages.append(
            OutboxMessage(
                id=message_id,
                channel=CHANNEL_NOTIFICATION,
                topic=notification_stream(user_id),
                key=str(user_id),
                payload={"type": message_type, "payload": payload},
            )
        )

    def defer(self, sql: str, params: Any = None) -> None:
        """A write whose answer the use case does not need: sent with the commit, in its round trip (see
        `commit`). Reads through `db` before the commit do not see it; a failure fails the commit."""
        self._deferred.append((sql, params))

    async def flush(self) -> None:
        """Sends the ORM session's pending changes, if a session was made, so that reads through `db` (which
        never autoflushes) see them."""
        if self._session is not None:
            await self._session.flush()

    async def commit(self) -> None:
        """Flushes the session, then sends the deferred writes, the outbox rows and COMMIT in one pipeline:
        one round trip, however many statements (each outbox write used to wait for its own answer, then
        COMMIT for its own). An error of any of them fails the commit and nothing of the unit is kept."""
        await self.flush()
        if self._deferred or self._messages:
            conn = self.db.conn
            async with conn.pipeline(), conn.cursor() as cur:
                for sql, params in self._deferred:
                    await cur.execute(sql, params)
                if self._messages:
                    await self._write_outbox(cur)
                # COMMIT as one more statement of the pipeline, answered at its end with the rest (psycopg's
                # own commit() would wait for it, and leaving the pipeline then costs another round trip)
                await cur.execute("COMMIT", prepare=False)
            self._deferred = []
        # SQLAlchemy's bookkeeping; after the pipeline the transaction is already over and this sends nothing
        await self._connection.commit()
        if self._messages:
            self._messages = []
            self._on_commit()

    async def _write_outbox(self, cur: AsyncCursor) -> None:
        """Inserts the outbox rows, first taking a lock per key (one of 1024 buckets of keys) until the
        commit: two commits that write rows of one user are serialized, so a row's `seq` order is its commit
        order within the user, which is what the relay publishes in (events/relay.py). Taken last (after
        the flush and the deferred writes), holding it only over these inserts and the commit; in one
        order, so two such commits never deadlock; bucketed, so a commit for thousands of users (a sale's
        fan-out, a checkpoint) holds a bounded number of locks. Sent in the commit's pipeline."""
        keys = sorted({m.key for m in self._messages})
        await cur.execute(_LOCK_KEYS, (keys,))
        await cur.executemany(
            _INSERT_OUTBOX, [(m.id, m.channel, m.topic, m.key, Jsonb(m.payload)) for m in self._messages]
        )


# The two-key space of advisory locks; class 7140 is the outbox's commit order (events/leases.py: 7150+).
_LOCK_KEYS = (
    "SELECT pg_advisory_xact_lock(7140, b)"
    " FROM (SELECT DISTINCT hashtext(k) & 1023 AS b FROM unnest(%s::text[]) AS k ORDER BY 1) AS ordered"
)
_INSERT_OUTBOX = "INSERT INTO outbox (id, channel, topic, key, payload) VALUES (%s, %s, %s, %s, %s)"


class ReadUnit:
    """A read-only unit of work (see the module docstring): `async with` gives its `Db`."""

    __slots__ = ("_conn", "_pool", "_session", "_sessions")

    def __init__(self, pool: AsyncConnectionPool | None, sessions: async_sessionmaker[AsyncSession]):
        self._pool = pool
        self._sessions = sessions
        self._conn = None
        self._session: AsyncSession | None = None

    async def __aenter__(self) -> Db:
        if self._pool is not None:
            self._conn = await self._pool.getconn()
            return Db(self._conn)
        # no pool of its own (a factory built without one): a connection of the engine's pool
        self._session = self._sessions()
        connection = await self._session.connection()
        return Db((await connection.get_raw_connection()).driver_connection)

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if self._session is not None:
            await self._session.close()
        elif self._pool is not None and self._conn is not None:
            await self._pool.putconn(self._conn)


class UnitOfWorkFactory:
    """Makes a fresh UnitOfWork per use case (`read()`: a ReadUnit); the composition root builds one and
    hands it to use cases. `pool`: the autocommit connections of read units (server.core.db.create_pool)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        source: str,
        on_commit: Callable[[], None],
        pool: AsyncConnectionPool | None = None,
    ):
        self.sessions = sessions
        self.pool = pool
        self._source = source
        self._on_commit = on_commit

    def __call__(self) -> UnitOfWork:
        return UnitOfWork(self.sessions, self._source, self._on_commit)

    def read(self) -> ReadUnit:
        return ReadUnit(self.pool, self.sessions)
