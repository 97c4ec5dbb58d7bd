"""The core's two Redis clients, the pooled redis-py client (server/core/redis.py) and the auto-pipelined
script client (server/core/redis_batching.py), against a real Redis of their own, which the tests restart,
flush and cut off."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.core.redis import create_redis
from server.core.redis_batching import BatchedScript
from tests.support.processes import PrivateRedis

# Counts its calls in KEYS[1] and answers ARGV[1]; ARGV[1] == "fail" answers an error instead.
SCRIPT = """
if ARGV[1] == 'fail' then return redis.error_reply('ERR asked to fail') end
redis.call('INCR', KEYS[1])
return ARGV[1]
"""


@pytest.fixture(scope="module")
async def private_redis():
    server = PrivateRedis(password="batching-secret")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def redis(private_redis: PrivateRedis):
    client = create_redis(private_redis.url.replace("/0", "/3"))
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def script(redis):
    batched = BatchedScript(redis, SCRIPT)
    yield batched
    batched.close()


async def test_concurrent_calls_each_get_their_own_reply(script, redis):
    replies = await asyncio.gather(*(script(keys=["calls"], args=[str(i)]) for i in range(300)))

    assert replies == [str(i).encode() for i in range(300)]
    assert int(await redis.get("calls")) == 300


async def test_an_error_reply_fails_only_its_own_call(script, redis):
    outcomes = await asyncio.gather(
        script(keys=["calls"], args=["a"]),
        script(keys=["calls"], args=["fail"]),
        script(keys=["calls"], args=["b"]),
        return_exceptions=True,
    )

    assert outcomes[0] == b"a" and outcomes[2] == b"b"
    assert isinstance(outcomes[1], ResponseError) and "asked to fail" in str(outcomes[1])
    assert int(await redis.get("calls")) == 2


async def test_calls_use_the_database_and_password_of_the_url(script, redis, private_redis):
    await script(keys=["calls"], args=["x"])

    assert int(await redis.get("calls")) == 1  # the client's database is 3
    default_db = create_redis(private_redis.url)
    try:
        assert await default_db.get("calls") is None
    finally:
        await default_db.aclose()


async def test_a_flushed_script_cache_is_loaded_again(script, redis):
    await script(keys=["calls"], args=["before"])
    await redis.script_flush()

    assert await script(keys=["calls"], args=["after"]) == b"after"
    assert await redis.script_exists(script._sha.decode()) == [True]
    assert int(await redis.get("calls")) == 2


async def test_a_killed_connection_is_replaced(script, redis):
    await script(keys=["calls"], args=["before"])
    killed = await redis.execute_command("CLIENT KILL TYPE normal SKIPME yes")
    assert killed >= 1

    assert await script(keys=["calls"], args=["after"]) == b"after"


async def test_calls_fail_while_redis_is_down_and_work_once_it_is_back(script, redis, private_redis):
    await script(keys=["calls"], args=["before"])
    await private_redis.stop()
    try:
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(script(keys=["calls"], args=["down"]), timeout=10)
    finally:
        await private_redis.start()

    assert await script(keys=["calls"], args=["after"]) == b"after"  # and its script cache was empty


async def test_pooled_connections_survive_a_redis_restart(redis, private_redis):
    """Every pooled connection is dead after the restart; each command still gets through."""
    await asyncio.gather(*(redis.set(f"key{i}", i) for i in range(20)))  # several pooled connections
    await private_redis.stop()
    await private_redis.start()

    assert await asyncio.gather(*(redis.get(f"key{i}") for i in range(20))) == [None] * 20
    await redis.set("after", 1)
    assert await redis.get("after") == b"1"


async def test_a_hung_redis_fails_calls_after_the_reply_timeout(redis):
    script = BatchedScript(redis, SCRIPT, reply_timeout_seconds=0.3)
    try:
        await script(keys=["calls"], args=["before"])
        await redis.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # Redis stops answering for 1.5 s
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await script(keys=["calls"], args=["hung"])
        assert time.monotonic() - started < 1.2
        await asyncio.sleep(1.5)

        assert await script(keys=["calls"], args=["after"]) == b"after"
    finally:
        script.close()


async def test_a_lone_call_is_sent_without_waiting_for_the_window(redis):
    script = BatchedScript(redis, SCRIPT, window_seconds=60)
    try:
        # the first call opens the connection, the second finds it idle: neither waits the minute
        assert await asyncio.wait_for(script(keys=["calls"], args=["first"]), 5) == b"first"
        assert await asyncio.wait_for(script(keys=["calls"], args=["second"]), 5) == b"second"
    finally:
        script.close()


async def test_calls_made_while_a_write_is_unanswered_share_the_next_write(redis):
    script = BatchedScript(redis, SCRIPT, window_seconds=0.2)
    try:
        await script(keys=["calls"], args=["warm"])
        connection = script._lane._connection
        writes: list[int] = []  # the calls each write carried
        written = asyncio.Event()
        send = connection.send

        def counted(payload, waiters):
            writes.append(len(waiters))
            written.set()
            send(payload, waiters)

        connection.send = counted
        await redis.execute_command("CLIENT", "PAUSE", "500", "ALL")  # the next write stays unanswered
        first = asyncio.ensure_future(script(keys=["calls"], args=["a"]))
        await asyncio.wait_for(written.wait(), 5)
        rest = [asyncio.ensure_future(script(keys=["calls"], args=[str(i)])) for i in range(5)]

        assert await asyncio.gather(first, *rest) == [b"a", *(str(i).encode() for i in range(5))]
        assert writes == [1, 5]
    finally:
        script.close()


async def test_a_call_sent_again_after_its_connection_was_lost_does_not_wait_for_the_window(redis):
    script = BatchedScript(redis, SCRIPT, window_seconds=60)
    try:
        await script(keys=["calls"], args=["warm"])
        connection = script._lane._connection
        written = asyncio.Event()
        send = connection.send

        def counted(payload, waiters):
            written.set()
            send(payload, waiters)

        connection.send = counted
        await redis.execute_command("CLIENT", "PAUSE", "300", "WRITE")  # the call stays unanswered
        call = asyncio.ensure_future(script(keys=["calls"], args=["again"]))
        await asyncio.wait_for(written.wait(), 5)
        connection._transport.abort()  # lost with the call in flight: it is sent once more

        assert await asyncio.wait_for(call, 5) == b"again"
    finally:
        script.close()
