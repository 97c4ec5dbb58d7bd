"""PostgreSQL access: the SQL handle repositories use (`Db`, psycopg 3 directly), the pool behind it, the
SQLAlchemy 2 async engine (the ORM's unit-of-work paths) and the declarative base of all tables.

Where which is used is the rule in docs/ARCHITECTURE.md ("Database access"): repositories run SQL text
through `Db` (tuples in, tuples out, psycopg's prepared statements); the ORM session stays for the write
paths that load entities and change them.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, OperationalError
from psycopg.errors import _WaitTimeout
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import MetaData, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from server.core import context
from server.core.config import libpq_url

# Stable constraint names, so Alembic revisions are reproducible.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
# A pooled connection idle for longer than this is checked (one empty query) before it is handed out, so
# that connections a Postgres restart killed are replaced rather than failing a call; busy ones are not.
CHECK_IDLE_SECONDS = 2.0
# Every session of the service runs in UTC, whatever the server's default (`Etc/UTC` here, a local zone
# elsewhere): psycopg then gives timestamptz values `datetime.timezone.utc`, not a ZoneInfo, which costs
# about 2 µs per value to load and 0.5 µs more per protobuf Timestamp made from it (issue 14; a page of 50
# library items has 200). The instants are the same; only their tzinfo object differs.
SESSION_OPTIONS = "-c TimeZone=UTC"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Db:
    """One connection, as repositories use it: SQL text with %s / %(name)s parameters, rows as tuples."""

    __slots__ = ("conn",)

    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def all(self, sql: str, params: Any = None, *, binary: bool = False) -> list[tuple[Any, ...]]:
        """The rows; `binary`: in PostgreSQL's binary format (numbers are not printed and parsed as text:
        cheaper on both sides for results of thousands of rows)."""
        cur = await self.conn.execute(sql, params, binary=binary)
        return await cur.fetchall()

    async def one(self, sql: str, params: Any = None) -> tuple[Any, ...] | None:
        cur = await self.conn.execute(sql, params)
        return await cur.fetchone()

    async def value(self, sql: str, params: Any = None) -> Any:
        row = await self.one(sql, params)
        return None if row is None else row[0]

    async def execute(self, sql: str, params: Any = None) -> int:
        """Runs a statement; the number of rows it touched."""
        cur = await self.conn.execute(sql, params)
        return cur.rowcount

    async def execute_many(self, sql: str, params_seq: list[Any]) -> None:
        async with self.conn.cursor() as cur:
            await cur.executemany(sql, params_seq)


async def db_of(handle: Db | AsyncSession) -> Db:
    """`handle` as a Db: a session gives a Db on its own connection, in its transaction (for helpers that
    callers reach with either `uow.db` or `uow.session`)."""
    if isinstance(handle, Db):
        return handle
    connection = await handle.connection()
    return Db((await connection.get_raw_connection()).driver_connection)


class DatabaseTimeout(OperationalError):
    """The server did not answer within the bound: it is hung (a stopped process still accepts connections
    and reads requests, and never answers, so its own `statement_timeout` cannot fire)."""


@dataclass(frozen=True, slots=True)
class DbTimeouts:
    """How long a caller waits for PostgreSQL (DB_*_TIMEOUT_SECONDS). Connect: libpq's `connect_timeout`
    and the wait for a pooled connection. Statement and lock: the server's `statement_timeout` and
    `lock_timeout`; the client itself gives up on any one exchange with the server a second after the
    statement timeout (or earlier, when the calling RPC's deadline is nearer)."""

    connect: float = 3.0
    statement: float = 5.0
    lock: float = 3.0

    @classmethod
    def from_settings(cls, settings) -> DbTimeouts:
        return cls(
            settings.db_connect_timeout_seconds,
            settings.db_statement_timeout_seconds,
            settings.db_lock_timeout_seconds,
        )

    def connect_kwargs(self) -> dict[str, Any]:
        options = (
            f"{SESSION_OPTIONS} -c statement_timeout={int(self.statement * 1000)} "
            f"-c lock_timeout={int(self.lock * 1000)}"
        )
        return {"connect_timeout": max(1, round(self.connect)), "options": options}

    def connection_class(self) -> type[AsyncConnection]:
        return type("BoundedConnection", (BoundedConnection,), {"reply_bound": self.statement + 1.0})


class BoundedConnection(AsyncConnection):
    """A psycopg connection whose every wait on the server (a statement, a fetch, a commit) ends within
    `reply_bound` seconds, or the RPC's deadline (server.core.context.answer_by) when nearer. On expiry the
    connection is closed (its state is unknown: the server may still run the statement) and
    DatabaseTimeout raised, an OperationalError, so the call fails UNAVAILABLE. Closing rather than
    cancelling matters: psycopg answers an interrupted wait by sending the server a cancel request and
    waiting for it, up to ten more seconds, which a hung server never answers."""

    reply_bound: float = 6.0

    async def wait(self, gen, interval: float = 0.1, timeout: float | None = None):
        if timeout is not None:  # a wait the caller bounded itself (`notifies`): no answer is expected
            return await super().wait(gen, interval, timeout)
        timeout = context.time_left(self.reply_bound, margin=0.05)
        try:
            return await super().wait(gen, interval, timeout)
        except _WaitTimeout:
            self.pgconn.finish()
            raise DatabaseTimeout(f"no answer from PostgreSQL within {timeout:.1f} s") from None


class _Pool(AsyncConnectionPool):
    """psycopg's pool, pinging a connection before handing it out only if it sat idle (see
    CHECK_IDLE_SECONDS). The time a connection came back is noted here, in `putconn`, rather than by a
    `reset` callback: with one, the pool returns every connection through a task of its worker (a queue
    put, a wakeup and a task per call), where without it the return happens inline."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._returned: weakref.WeakKeyDictionary[AsyncConnection, float] = weakref.WeakKeyDictionary()
        super().__init__(*args, check=self._check_if_idle, **kwargs)

    async def putconn(self, conn: AsyncConnection) -> None:
        self._returned[conn] = time.monotonic()
        await super().putconn(conn)

    async def _check_if_idle(self, conn: AsyncConnection) -> None:
        if time.monotonic() - self._returned.get(conn, 0.0) > CHECK_IDLE_SECONDS:
            await AsyncConnectionPool.check_connection(conn)


def create_pool(database_url: str, *, size: int, timeouts: DbTimeouts | None = None) -> AsyncConnectionPool:
    """The pool of autocommit connections read-only units of work use (up to `size` and as many again, as
    the engine's pool and its overflow); open it with `await pool.open()`. With `timeouts`, every wait on
    the server is bounded (BoundedConnection), and so is the wait for a free connection."""
    session = timeouts.connect_kwargs() if timeouts else {"options": SESSION_OPTIONS}
    bounded = (
        {"connection_class": timeouts.connection_class(), "timeout": timeouts.connect} if timeouts else {}
    )
    return _Pool(
        libpq_url(database_url),
        min_size=min(2, size),
        max_size=2 * size,
        kwargs={"autocommit": True, **session},
        **bounded,
        max_idle=300,
        open=False,
    )


def create_engine(
    database_url: str, *, pool_size: int = 10, timeouts: DbTimeouts | None = None
) -> AsyncEngine:
    """The engine of units of work. Like the read pool, it pings a pooled connection only when it has been
    idle for CHECK_IDLE_SECONDS (SQLAlchemy's pool_pre_ping would cost a round trip on every checkout).
    Bound parameters never appear in its errors (so never in logs). With `timeouts`, as create_pool."""
    bounded: dict[str, Any] = {"connect_args": {"options": SESSION_OPTIONS}}
    if timeouts is not None:
        connection_class = timeouts.connection_class()
        bounded = {
            "pool_timeout": timeouts.connect,
            "connect_args": {"async_creator_fn": connection_class.connect, **timeouts.connect_kwargs()},
        }
    engine = create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        hide_parameters=True,
        **bounded,
    )
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _returned(dbapi_connection, record) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _check(dbapi_connection, record, proxy) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at <= CHECK_IDLE_SECONDS:
            return  # new, or in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise DisconnectionError() from exc  # the pool replaces the connection and retries
            raise

    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
