"""Counting Postgres writes: pg_stat_database (database-wide) and pg_stat_user_tables (which table).

The goal counts rows inserted, updated or deleted in the application's tables (pg_stat_user_tables); the
database-wide tuple counters are reported too, but they also move when autovacuum ANALYZE rewrites
pg_statistic, which is no write of the service. pg_stat_database is read over a connection to the
`postgres` database, so reading it adds nothing to the library database's counters. Backends publish
their counters lazily (at most once a second, up to 10 s later when idle); the benchmark therefore takes
its final snapshot after the measured service process has exited (a backend flushes its counters when its
connection closes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo


@dataclass
class Snapshot:
    at: float
    xact_commit: int
    xact_rollback: int
    tup_inserted: int
    tup_updated: int
    tup_deleted: int
    tables: dict[str, int] = field(default_factory=dict)  # table -> ins+upd+del

    @property
    def rows_written(self) -> int:
        return self.tup_inserted + self.tup_updated + self.tup_deleted


def _admin_conninfo(libpq_url: str) -> tuple[str, str]:
    params = conninfo_to_dict(libpq_url)
    database = params.get("dbname") or "library"
    params["dbname"] = "postgres"
    params.setdefault("connect_timeout", "5")
    return make_conninfo(**params), database


def snapshot(libpq_url: str) -> Snapshot:
    conninfo, database = _admin_conninfo(libpq_url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted "
            "FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
    if row is None:
        raise RuntimeError(f"database {database!r} not found in pg_stat_database")
    snap = Snapshot(time.monotonic(), *(int(v) for v in row))
    # per-table counters live in the database itself (read-only query; this adds one xact_commit there,
    # which `diff` subtracts)
    with psycopg.connect(libpq_url, autocommit=True, connect_timeout=5) as conn:
        for name, written in conn.execute(
            "SELECT schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables"
        ):
            snap.tables[name] = int(written)
    return snap


@dataclass
class Diff:
    seconds: float
    xact_commit: int
    rows_written: int  # database-wide (pg_stat_database), system catalogs included
    table_rows_written: int  # the application's tables (pg_stat_user_tables)
    tables: dict[str, int]

    def as_dict(self) -> dict:
        return {
            "seconds": round(self.seconds, 2),
            "xact_commit": self.xact_commit,
            "rows_written": self.rows_written,
            "table_rows_written": self.table_rows_written,
            "tables": self.tables,
        }


# Each snapshot opens one connection to the library database for the per-table read: one commit (its
# SELECT), published when that connection closes, i.e. before the next snapshot.
_OWN_COMMITS_PER_SNAPSHOT = 1


def diff(before: Snapshot, after: Snapshot) -> Diff:
    tables = {
        name: after.tables.get(name, 0) - before.tables.get(name, 0)
        for name in set(before.tables) | set(after.tables)
    }
    return Diff(
        seconds=after.at - before.at,
        xact_commit=max(0, after.xact_commit - before.xact_commit - _OWN_COMMITS_PER_SNAPSHOT),
        rows_written=after.rows_written - before.rows_written,
        table_rows_written=sum(tables.values()),
        tables={name: n for name, n in sorted(tables.items()) if n},
    )
