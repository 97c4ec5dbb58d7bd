"""Stopping the server's workers never hangs on a worker that missed its cancellation (server/app.py)."""

from __future__ import annotations

import asyncio
import contextlib

from server.app import cancel_all


async def _swallows(times: int, stopped: list[str]) -> None:
    """A worker whose first `times` cancellations are lost on the way, as in redis-py's timeout wrapper."""
    for _ in range(times):
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
    try:
        await asyncio.sleep(3600)
    finally:
        stopped.append("stopped")


async def test_a_worker_that_swallowed_a_cancellation_is_cancelled_again():
    stopped: list[str] = []
    task = asyncio.create_task(_swallows(2, stopped))
    await asyncio.sleep(0)
    await cancel_all([task], wait_seconds=0.05)
    assert task.cancelled() and stopped == ["stopped"]


async def test_a_worker_that_never_stops_does_not_hold_the_stop(caplog):
    stopped: list[str] = []
    task = asyncio.create_task(_swallows(10, stopped), name="stubborn")
    await asyncio.sleep(0)
    await cancel_all([task], rounds=3, wait_seconds=0.05)
    assert not task.done()
    assert "workers did not stop" in caplog.text
    task.cancel()  # the remaining lost cancellations, then a real one
    while not task.done():
        task.cancel()
        await asyncio.sleep(0)
