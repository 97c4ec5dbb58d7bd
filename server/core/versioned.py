"""Documents with an etag (AIP-154), written by compare-and-swap on a `version` column.

A document's etag is `v{version}`; `v0` is the never-written document (no row). A write reads the row,
checks the client's etag against it, builds the new values from what it read, and stores them as
`version + 1` only if the row is still at the version read (`UPDATE … WHERE version = %s`, or
`INSERT … ON CONFLICT DO NOTHING` for v0). Under READ COMMITTED a concurrent writer of the same row waits
for the first one's commit and then re-checks that condition against the committed row, so of two racing
writers exactly one succeeds. The loser, with an etag: ABORTED ETAG_MISMATCH.

A write without an etag reads the row FOR UPDATE instead, so concurrent unconditional writers of one
document queue on its row lock and each builds from the one before (no change is dropped, none is refused).
Only the very first write of a document can still lose: its INSERT to another first INSERT, after which it
reads the winner's row (locked) and updates it. Retrying optimistically instead, ten concurrent merges
could each lose more rounds in a row than any bound allows on a loaded machine.

The statements are SQL text on `Db` (docs/ARCHITECTURE.md, "Database access"), built once per table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb

from server.core.db import Db
from server.core.errors import Aborted

# Lost swaps after which a write gives up (the caller retries). With the row lock an unconditional write
# loses at most once (the first INSERT of a document); the bound guards against a row deleted meanwhile.
MAX_SWAP_ATTEMPTS = 5

Values = dict[str, Any]


def etag_of(version: int) -> str:
    """The etag of a document version; clients compare it as an opaque string."""
    return f"v{version}"


def etag_mismatch(version: int) -> Aborted:
    return Aborted(
        "the document changed since the etag was read; read it again and retry",
        metadata={"currentEtag": etag_of(version)},
    )


@dataclass(frozen=True)
class VersionedTable:
    """A document table: its key columns, its value columns (`json`: those holding JSONB) and the
    `version` column; the three statements are built from these constants once."""

    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    json: frozenset[str] = frozenset()
    select_sql: str = field(init=False)
    lock_sql: str = field(init=False)
    insert_sql: str = field(init=False)
    update_sql: str = field(init=False)

    def __post_init__(self) -> None:
        where = " AND ".join(f"{k} = %s" for k in self.key)
        names = (*self.key, *self.columns)
        set_values = ", ".join(f"{c} = %s" for c in self.columns)
        statements = {
            "select_sql": f"SELECT version, {', '.join(self.columns)} FROM {self.name} WHERE {where}",
            "lock_sql": (
                f"SELECT version, {', '.join(self.columns)} FROM {self.name} WHERE {where} FOR UPDATE"
            ),
            "insert_sql": (
                f"INSERT INTO {self.name} ({', '.join(names)}, version) "
                f"VALUES ({', '.join('%s' for _ in names)}, 1) ON CONFLICT DO NOTHING RETURNING version"
            ),
            "update_sql": (
                f"UPDATE {self.name} SET {set_values}, version = version + 1 "
                f"WHERE {where} AND version = %s RETURNING version"
            ),
        }
        for name, sql in statements.items():
            object.__setattr__(self, name, sql)

    def params(self, values: Values) -> list[Any]:
        return [Jsonb(values[c]) if c in self.json else values[c] for c in self.columns]


async def read(
    db: Db, table: VersionedTable, key: Sequence[Any], *, lock: bool = False
) -> tuple[int, Values] | None:
    """(version, values by column) of the document, or None when it was never written; `lock`: its row
    locked until the transaction ends."""
    row = await db.one(table.lock_sql if lock else table.select_sql, tuple(key))
    if row is None:
        return None
    return row[0], dict(zip(table.columns, row[1:], strict=True))


async def write(
    db: Db,
    table: VersionedTable,
    key: Sequence[Any],
    *,
    etag: str,
    build: Callable[[Values | None], Values],
) -> tuple[int, Values]:
    """Writes `build(current values)` as the next version, if `etag` (when given) is still current.

    Returns the new version and the values written. `build` may raise (e.g. a size limit) to write
    nothing; it must not have side effects, since a lost race calls it again.
    """
    for _ in range(MAX_SWAP_ATTEMPTS):
        current = await read(db, table, key, lock=not etag)
        version = current[0] if current is not None else 0
        if etag and etag != etag_of(version):
            raise etag_mismatch(version)
        values = build(current[1] if current is not None else None)
        if version == 0:
            swapped = await db.one(table.insert_sql, (*key, *table.params(values)))
        else:
            swapped = await db.one(table.update_sql, (*table.params(values), *key, version))
        if swapped is not None:
            return version + 1, values
    raise Aborted("the document kept changing concurrently; retry")
