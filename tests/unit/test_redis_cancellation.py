"""A cancellation arriving just as a Redis wait ends is not lost (server/core/redis.py, redis_batching.py).

Python 3.11's `asyncio.wait_for` returns the inner result when the outer task is cancelled in the same
turn as the inner await completes: the cancelled task carries on as if never cancelled (the relay's leaked
connections, a stop that never finished). Both waits below are bounded with `asyncio.timeout` instead.
No Redis is needed: each test makes the wait end and cancels its task in the same turn of the loop.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode

from server.core.redis import WaitingRedisCluster
from server.core.redis_batching import BatchedScript


async def test_a_cancelled_connect_of_the_batching_client_stays_cancelled():
    script = BatchedScript(Redis(host="127.0.0.1", port=1), "return 1")  # reads only its pool settings
    lane = script._lane
    assert lane is not None
    opened: asyncio.Future = asyncio.get_running_loop().create_future()

    async def open_connection():  # the connection opens exactly when the caller is cancelled
        return await opened

    lane._open = open_connection
    task = asyncio.create_task(lane._connect())
    await asyncio.sleep(0)  # the task waits for the connection
    opened.set_result(object())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancelled_wait_for_a_cluster_call_slot_stays_cancelled_and_frees_it():
    cluster = WaitingRedisCluster(startup_nodes=[ClusterNode("127.0.0.1", 1)])  # never connected
    cluster.bound_waits(1, 30.0)
    calls = cluster._calls
    assert calls is not None

    async def call():
        async with cluster._slot():
            return "ran although cancelled"

    await calls.acquire()  # another call holds the only slot
    waiting = asyncio.create_task(call())
    await asyncio.sleep(0)  # waiting for the slot
    calls.release()  # the slot is handed to the waiter in the turn it is cancelled
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not calls.locked()  # the cancelled waiter did not keep it
    await cluster.aclose()
