"""server/core/overlap.py: a call started early, awaited when needed, cancelled when not."""

from __future__ import annotations

import asyncio
import gc

import pytest

from server.core.overlap import Overlapped


async def test_the_result_is_the_calls_and_it_ran_while_the_block_did_other_work():
    order: list[str] = []

    async def call() -> int:
        order.append("call started")
        await asyncio.sleep(0)
        return 7

    async with Overlapped(call()) as overlapped:
        await asyncio.sleep(0)
        order.append("other work")
        assert await overlapped.result() == 7
    assert order == ["call started", "other work"]


async def test_a_call_whose_result_is_not_wanted_is_cancelled_when_the_block_ends():
    finished = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await finished.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with Overlapped(slow()):
        await asyncio.sleep(0)
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_an_error_of_an_unwanted_call_is_not_left_unretrieved():
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))

    async def failing() -> None:
        raise RuntimeError("nobody wants this")

    async with Overlapped(failing()):
        await asyncio.sleep(0)  # it fails meanwhile
    await asyncio.sleep(0)
    gc.collect()  # an unretrieved task exception is reported when the task is collected
    assert reported == []


async def test_the_error_of_an_awaited_call_is_raised():
    async def failing() -> None:
        raise RuntimeError("the store failed")

    with pytest.raises(RuntimeError, match="the store failed"):
        async with Overlapped(failing()) as overlapped:
            await overlapped.result()


async def test_nothing_started_gives_none():
    async with Overlapped(None) as overlapped:
        assert await overlapped.result() is None
