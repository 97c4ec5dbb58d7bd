"""Overlapping one call with other work of the same request.

    async with Overlapped(store.head(key)) as head:   # started now
        rows = await repo.locked(...)                 # meanwhile
        stored = await head.result()                  # when it is needed

Leaving the block without having awaited the result cancels the call (its outcome is not wanted), so it
never outlives the request and never leaves an error nobody retrieved. `Overlapped(None)` starts nothing
and its result is None.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Overlapped(Generic[T]):
    def __init__(self, call: Coroutine[Any, Any, T] | None):
        self._call = call
        self._task: asyncio.Task[T] | None = None

    async def __aenter__(self) -> Overlapped[T]:
        if self._call is not None:
            self._task = asyncio.ensure_future(self._call)
        return self

    async def result(self) -> T | None:
        return None if self._task is None else await self._task

    async def __aexit__(self, *exc) -> None:
        if self._task is not None:
            # Stops it if it still runs; a finished one's error counts as retrieved (asyncio logs it no
            # more), which is what an unwanted outcome needs.
            self._task.cancel()
