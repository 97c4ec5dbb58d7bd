"""Waiting for a condition in tests: poll until it holds, fail loudly when it doesn't in time."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], *, what: str, timeout: float = 30.0, every: float = 0.1
) -> None:
    """Polls `condition` (plain or async) until it is true; fails the test naming `what` when `timeout`
    seconds pass first."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(every)
