"""Documents with an etag (AIP-154), written by compare-and-swap on a `version` column.

A document's etag is `v{version}`; `v0` is the never-written document (no row). A write reads the row,
checks the client's etag against it, builds the new values from what it read, and stores them as
`version + 1` only if the row is still at the version read (`UPDATE … WHERE version = :read`, or
`INSERT … ON CONFLICT DO NOTHING` for v0). Under READ COMMITTED a concurrent writer of the same row waits
for the first one's commit and then re-checks that condition against the committed row, so of two racing
writers exactly one succeeds. The loser: with an etag, ABORTED ETAG_MISMATCH; without one, it re-reads
and rebuilds from the winner's document (so no concurrent change is dropped), a bounded number of times.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.errors import Aborted

Row = TypeVar("Row")
# Rounds of losing the race in a row after which an unconditional write gives up (the caller retries).
MAX_SWAP_ATTEMPTS = 5


def etag_of(version: int) -> str:
    """The etag of a document version; clients compare it as an opaque string."""
    return f"v{version}"


def etag_mismatch(version: int) -> Aborted:
    return Aborted(
        "the document changed since the etag was read; read it again and retry",
        metadata={"currentEtag": etag_of(version)},
    )


async def read(session: AsyncSession, model: type[Row], key: dict[str, Any]) -> Row | None:
    """The current row (fresh from the database, not the session's cache), or None when never written."""
    return await session.scalar(select(model).filter_by(**key).execution_options(populate_existing=True))


async def write(
    session: AsyncSession,
    model: type[Row],
    key: dict[str, Any],
    *,
    etag: str,
    build: Callable[[Row | None], dict[str, Any]],
) -> tuple[int, dict[str, Any]]:
    """Writes `build(current row)` as the next version, if `etag` (when given) is still current.

    Returns the new version and the values written. `build` may raise (e.g. a size limit) to write
    nothing; it must not have side effects, since a lost race calls it again.
    """
    for _ in range(MAX_SWAP_ATTEMPTS):
        current = await read(session, model, key)
        version = current.version if current is not None else 0  # type: ignore[attr-defined]
        if etag and etag != etag_of(version):
            raise etag_mismatch(version)
        values = build(current)
        if await _swap(session, model, key, version, values):
            return version + 1, values
    raise Aborted("the document kept changing concurrently; retry")


async def _swap(
    session: AsyncSession, model: type[Row], key: dict[str, Any], version: int, values: dict[str, Any]
) -> bool:
    columns = {**values, "version": version + 1}
    if version == 0:
        statement = pg_insert(model).values(**key, **columns).on_conflict_do_nothing()
    else:
        statement = update(model).filter_by(**key, version=version).values(**columns)
    result = await session.execute(statement.returning(model.version))  # type: ignore[attr-defined]
    return result.scalar() is not None
