"""Auto-pipelining of one Lua script: calls arriving within a short window go to Redis as one pipeline,
so a hot path (heartbeats) pays one connection checkout and one round trip per batch instead of per call.
grpc.aio hands the loop about one call per turn, so batching needs a small time window, not just a turn;
a batch also leaves as soon as it is full. Each caller still gets its own reply or error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

_Call = tuple[Sequence[str], Sequence[Any], asyncio.Future]


class BatchedScript:
    def __init__(self, redis: Redis, source: str, *, window_seconds: float = 0.002, max_batch: int = 128):
        self._redis = redis
        self._script = redis.register_script(source)
        self._window = window_seconds
        self._max_batch = max_batch
        self._pending: list[_Call] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()

    async def __call__(self, *, keys: Sequence[str], args: Sequence[Any]) -> Any:
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        self._pending.append((keys, args, reply))
        if len(self._pending) >= self._max_batch:
            self._dispatch()
        elif self._timer is None:
            self._timer = loop.call_later(self._window, self._dispatch)
        return await reply

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        task = asyncio.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Call]) -> None:
        try:
            replies = await self._execute_recovering(batch)
        except Exception as error:
            replies = [error] * len(batch)
        for (_, _, reply), outcome in zip(batch, replies, strict=True):
            if reply.done():
                continue
            if isinstance(outcome, Exception):
                reply.set_exception(outcome)
            else:
                reply.set_result(outcome)

    async def _execute_recovering(self, batch: list[_Call]) -> list[Any]:
        """Retries after a lost connection or a lost script cache (Redis restarted or failed over)."""
        for _ in range(2):
            try:
                replies = await self._execute(batch)
            except RedisConnectionError:
                continue
            if any(isinstance(reply, RedisConnectionError) for reply in replies):
                continue
            if any(isinstance(reply, NoScriptError) for reply in replies):
                await self._redis.script_load(self._script.script)
                continue
            return replies
        return await self._execute(batch)  # the last attempt answers whatever it gets

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                pipe.evalsha(self._script.sha, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)
