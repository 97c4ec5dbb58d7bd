"""`python -m scripts.bench.sqlcapture OUT`: the service (`python -m server`), recording what each call sends
to Postgres and Redis, for the DB echo baseline (scripts/bench/db_echo.py).

Every statement psycopg executes and every Redis command (or pipeline) is appended to OUT (pickled records)
with the call's x-request-id, whatever layer issued it (SQLAlchemy, raw psycopg, redis-py). Statements
outside a call (health checks, workers) and the pools' pings (`;`, ``) are not recorded. The bench makes
one call per distinct request with a request id of its own, then reads OUT back (`read`).
"""

from __future__ import annotations

import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio.client as redis_client
from psycopg.types.json import Json, Jsonb

_PINGS = (";", "")  # SQLAlchemy's pool ping, psycopg_pool's connection check


@dataclass(frozen=True)
class JsonParam:
    """A psycopg Json/Jsonb parameter, without its dumps function (which may not pickle)."""

    binary: bool
    obj: Any

    def adapt(self) -> Json | Jsonb:
        return Jsonb(self.obj) if self.binary else Json(self.obj)


@dataclass
class Op:
    kind: str  # "sql" | "redis" | "pipeline"
    sql: str = ""
    params: Any = None
    many: bool = False
    commands: list[tuple] = field(default_factory=list)  # redis: one command; pipeline: several


def _portable(value: Any) -> Any:
    if isinstance(value, Jsonb | Json):
        return JsonParam(isinstance(value, Jsonb), value.obj)
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_portable(v) for v in value)
    return value


def _install(out: Path) -> None:
    from server.core import context

    sink = open(out, "ab")  # noqa: SIM115 (open for the process's lifetime)

    def record(op: Op) -> None:
        rid = context.request_id.get()
        if rid:
            pickle.dump((rid, op), sink)
            sink.flush()

    execute, executemany = psycopg.AsyncCursor.execute, psycopg.AsyncCursor.executemany

    async def traced_execute(self, query, params=None, **kw):
        if query not in _PINGS:
            record(Op("sql", str(query), _portable(params)))
        return await execute(self, query, params, **kw)

    async def traced_executemany(self, query, params_seq, **kw):
        params_seq = list(params_seq)
        record(Op("sql", str(query), _portable(params_seq), many=True))
        return await executemany(self, query, params_seq, **kw)

    command = redis_client.Redis.execute_command
    pipeline_execute = redis_client.Pipeline.execute

    async def traced_command(self, *args, **options):
        if not isinstance(self, redis_client.Pipeline):
            record(Op("redis", commands=[args]))
        return await command(self, *args, **options)

    async def traced_pipeline(self, raise_on_error: bool = True):
        record(Op("pipeline", commands=[args for args, _options in self.command_stack]))
        return await pipeline_execute(self, raise_on_error)

    psycopg.AsyncCursor.execute = traced_execute
    psycopg.AsyncCursor.executemany = traced_executemany
    redis_client.Redis.execute_command = traced_command
    redis_client.Pipeline.execute = traced_pipeline


def read(path: Path) -> dict[str, list[Op]]:
    """The recorded operations of each request id, in order."""
    calls: dict[str, list[Op]] = {}
    with open(path, "rb") as f:
        while True:
            try:
                rid, op = pickle.load(f)
            except EOFError:
                return calls
            calls.setdefault(rid, []).append(op)


def main() -> None:
    import uvloop

    from scripts.bench import sqlcapture  # this module by its name (not __main__), so its records unpickle

    sqlcapture._install(Path(sys.argv[1]))

    from server.__main__ import main as serve

    uvloop.run(serve())


if __name__ == "__main__":
    main()
