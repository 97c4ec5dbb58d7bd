"""PostgreSQL access: the SQL handle repositories use (`Db`, psycopg 3 directly), the pool behind it, the
SQLAlchemy 2 async engine (the ORM's unit-of-work paths) and the declarative base of all tables.

Where which is used is the rule in docs/ARCHITECTURE.md ("Database access"): repositories run SQL text
through `Db` (tuples in, tuples out, psycopg's prepared statements); the ORM session stays for the write
paths that load entities and change them.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import MetaData, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Db:
    """One connection, as repositories use it: SQL text with %s / %(name)s parameters, rows as tuples."""

    __slots__ = ("conn",)

    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def all(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        cur = await self.conn.execute(sql, params)
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


class _IdleCheck:
    """check/reset callbacks of the pool: ping a connection only if it sat idle (see CHECK_IDLE_SECONDS)."""

    def __init__(self) -> None:
        self._returned: weakref.WeakKeyDictionary[AsyncConnection, float] = weakref.WeakKeyDictionary()

    async def reset(self, conn: AsyncConnection) -> None:
        self._returned[conn] = time.monotonic()

    async def check(self, conn: AsyncConnection) -> None:
        if time.monotonic() - self._returned.get(conn, 0.0) > CHECK_IDLE_SECONDS:
            await AsyncConnectionPool.check_connection(conn)


def create_pool(database_url: str, *, size: int) -> AsyncConnectionPool:
    """The pool of autocommit connections read-only units of work use (up to `size` and as many again, as
    the engine's pool and its overflow); open it with `await pool.open()`."""
    idle = _IdleCheck()
    return AsyncConnectionPool(
        libpq_url(database_url),
        min_size=min(2, size),
        max_size=2 * size,
        kwargs={"autocommit": True},
        check=idle.check,
        reset=idle.reset,
        max_idle=300,
        open=False,
    )


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    """The engine of units of work. Like the read pool, it pings a pooled connection only when it has been
    idle for CHECK_IDLE_SECONDS (SQLAlchemy's pool_pre_ping would cost a round trip on every checkout)."""
    engine = create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
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
