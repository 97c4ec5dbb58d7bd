"""The DB cases' baseline: a bare grpc.aio server that runs, for each request, the SQL the service ran for it.

`python -m scripts.bench.db_echo --port P --recipes FILE` (FILE from scripts/bench/db_cases.py). A recipe
is what the service sent to Postgres and Redis for one distinct request (recorded by
scripts/bench/sqlcapture.py): the same SQL text with the same parameters bound (fresh values for the random
ids a write's INSERTs make per call, v4 UUIDs), the same Redis commands, in the same order, all rows fetched,
and the service's response bytes returned. Nothing else: no protobuf, no auth, no ORM, no logging. Reads run
on autocommit connections (no BEGIN/COMMIT); a write's statements run in one transaction, as a write needs.
Connections come from a psycopg async pool of the service's size, on uvloop, as in the service, with the
service's session settings (`--options`: its time zone and timeouts; the time zone decides which tzinfo
psycopg gives timestamps, and so what loading them costs).
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import uvloop
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from scripts.bench.sqlcapture import JsonParam, Op


@dataclass
class Recipe:
    ops: list[Op]
    transactional: bool
    response: bytes


def _bind(value: Any, fresh: dict[uuid.UUID, uuid.UUID] | None) -> Any:
    """Recorded parameters as psycopg takes them; with `fresh`, every v4 UUID replaced (consistently): the
    ids a write's INSERT makes per call."""
    if isinstance(value, JsonParam):
        return value.adapt()
    if fresh is not None and isinstance(value, uuid.UUID) and value.version == 4:
        new = fresh.get(value)
        if new is None:
            new = fresh[value] = uuid.uuid4()
        return new
    if isinstance(value, dict):
        return {k: _bind(v, fresh) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_bind(v, fresh) for v in value)
    return value


class DbEcho:
    def __init__(self, recipes: dict[str, dict[bytes, Recipe]], pool: AsyncConnectionPool, redis: Redis):
        self.recipes = recipes
        self.pool = pool
        self.redis = redis

    async def _run(self, conn, recipe: Recipe) -> None:
        fresh: dict[uuid.UUID, uuid.UUID] = {}
        for op in recipe.ops:
            if op.kind == "sql":
                inserts = recipe.transactional and op.sql.lstrip().upper().startswith("INSERT")
                params = _bind(op.params, fresh if inserts else None)
                cur = conn.cursor()
                if op.many:
                    await cur.executemany(op.sql, params)
                else:
                    await cur.execute(op.sql, params)
                if cur.description is not None:
                    await cur.fetchall()
            elif op.kind == "redis":
                await self.redis.execute_command(*op.commands[0])
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for command in op.commands:
                        pipe.execute_command(*command)
                    await pipe.execute()

    def handler(self, method: str):
        table = self.recipes[method]

        async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            recipe = table[request]
            async with self.pool.connection() as conn:
                if recipe.transactional:
                    async with conn.transaction():
                        await self._run(conn, recipe)
                else:
                    await self._run(conn, recipe)
            return recipe.response

        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=_identity, response_serializer=_identity
        )


class _Methods(grpc.GenericRpcHandler):
    def __init__(self, handlers: dict[str, grpc.RpcMethodHandler]):
        self._handlers = handlers

    def service(self, handler_call_details):
        return self._handlers.get(handler_call_details.method)


def _identity(data: bytes) -> bytes:
    return data


async def serve(args: argparse.Namespace, recipes: dict[str, dict[bytes, Recipe]]) -> None:
    pool = AsyncConnectionPool(
        args.database_url,
        min_size=args.pool_size,
        max_size=args.pool_size * 2,  # the service's pool: pool_size + max_overflow
        kwargs={"autocommit": True, "options": args.options},
        open=False,
    )
    await pool.open(wait=True)
    redis = Redis.from_url(args.redis_url)
    echo = DbEcho(recipes, pool, redis)
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 8 * 1024 * 1024)],
    )
    server.add_generic_rpc_handlers((_Methods({m: echo.handler(m) for m in recipes}),))
    server.add_insecure_port(f"{args.host}:{args.port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"db echo on {args.host}:{args.port}: {', '.join(recipes)}", flush=True)
    await stop.wait()
    await server.stop(1)
    await pool.close()
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--recipes", required=True)
    parser.add_argument("--database-url", required=True, help="libpq URL")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--options", default="", help="libpq options: the service's session settings")
    args = parser.parse_args()
    uvloop.run(serve(args, pickle.loads(Path(args.recipes).read_bytes())))


if __name__ == "__main__":
    main()
