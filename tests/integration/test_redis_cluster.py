"""The Redis clients against a real Redis Cluster of their own (three masters, tests/support/processes.py):
the pipelined script client routing by slot and following a slot that moves, the pooled client's callers
waiting for a connection, and the relay's hub hearing the streams of every master."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from gateway.hub import NotificationHub
from server.core.redis import SUBSCRIBER_HEADROOM, create_redis
from server.core.redis_batching import BatchedScript
from server.core.uow import notification_stream
from tests.support.processes import PrivateRedisCluster

# Counts its calls in KEYS[1] and answers the port of the node that ran it.
SCRIPT = """
redis.call('INCR', KEYS[1])
return ARGV[1]
"""


@pytest.fixture(scope="module")
async def cluster():
    server = PrivateRedisCluster()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def redis(cluster: PrivateRedisCluster):
    client = cluster.client(timeout=5.0)
    await client.initialize()
    yield client
    await client.aclose()


def _master_of(redis: RedisCluster, key: str) -> str:
    return redis.nodes_manager.get_node_from_slot(redis.keyslot(key)).name


def _keys_on_every_master(redis: RedisCluster, per_master: int) -> list[str]:
    keys: list[str] = []
    seen: Counter[str] = Counter()
    while len(seen) < 3 or min(seen.values()) < per_master:
        key = f"calls:{{{uuid.uuid4()}}}"
        if seen[_master_of(redis, key)] < per_master:
            seen[_master_of(redis, key)] += 1
            keys.append(key)
    return keys


async def test_batched_calls_go_to_the_master_of_their_slot_one_lane_each(redis):
    script = BatchedScript(redis, SCRIPT)
    keys = _keys_on_every_master(redis, per_master=50)
    try:
        replies = await asyncio.gather(*(script(keys=[key], args=[str(i)]) for i, key in enumerate(keys)))
        assert replies == [str(i).encode() for i in range(len(keys))]
        assert [int(v) for v in await redis.mget_nonatomic(keys)] == [1] * len(keys)
        assert len(script._lanes) == 3  # one batching connection per master
    finally:
        script.close()


async def test_a_batched_call_follows_its_slot_to_another_master(redis, cluster):
    """A slot moved since the client read the map: the old master answers MOVED, the call is sent through
    the cluster client (which learns the new map) and the next call goes to the new master's lane."""
    script = BatchedScript(redis, SCRIPT)
    key = f"moving:{{{uuid.uuid4()}}}"
    try:
        assert await script(keys=[key], args=["before"]) == b"before"
        await redis.delete(key)  # an empty slot can be reassigned without migrating keys
        slot = redis.keyslot(key)
        old = _master_of(redis, key)
        new = next(node for node in redis.get_primaries() if node.name != old)
        new_id = (await redis.cluster_myid(target_node=new)).strip()
        for node in redis.get_primaries():
            await redis.execute_command("CLUSTER", "SETSLOT", slot, "NODE", new_id, target_nodes=node)
        assert redis.nodes_manager.get_node_from_slot(slot).name == old  # the client's map is stale

        assert await script(keys=[key], args=["after"]) == b"after"
        assert await script(keys=[key], args=["again"]) == b"again"

        assert redis.nodes_manager.get_node_from_slot(slot).name == new.name
        assert int(await redis.get(key)) == 2
        assert new.name in script._lanes
    finally:
        script.close()


async def test_callers_wait_for_a_connection_rather_than_fail(cluster):
    """Two connections per master for 300 concurrent commands and 50 pipelines: every one succeeds (the
    cluster nodes of redis-py alone would refuse the third with MaxConnectionsError)."""
    client = create_redis(cluster.url, cluster=True, max_connections=2, timeout=10.0)
    try:
        counts = await asyncio.gather(*(client.incr(f"waits:{{{i % 10}}}") for i in range(300)))
        assert sorted(counts)[-1] == 30

        async def pipeline() -> list:
            async with client.pipeline(transaction=False) as pipe:
                for i in range(10):
                    pipe.get(f"waits:{{{i}}}")
                return await pipe.execute()

        assert await asyncio.gather(*(pipeline() for _ in range(50))) == [[b"30"] * 10] * 50
        assert max(len(node._connections) for node in client.get_nodes()) <= 2 + SUBSCRIBER_HEADROOM
    finally:
        await client.aclose()


async def _user_in_an_empty_slot(redis) -> str:
    """A user whose notification stream's slot holds no key yet: only an empty slot can be handed to
    another master without migrating keys, and the module's earlier tests leave keys in some slots."""
    while True:
        user_id = str(uuid.uuid4())
        slot = redis.keyslot(notification_stream(user_id))
        owner = redis.nodes_manager.get_node_from_slot(slot)
        if await redis.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot, target_nodes=owner) == 0:
            return user_id


class _Member:
    def __init__(self, user_id: str):
        self.user_id = user_id
        self.woken = asyncio.Event()

    def wake(self) -> None:
        self.woken.set()


async def test_the_hub_hears_the_streams_of_every_master(redis):
    """Keyspace notifications are node-local: one user per master, each woken by an XADD to its stream."""
    hub = NotificationHub(redis)
    await hub.start()
    try:
        users: dict[str, str] = {}
        while len(users) < 3:
            user = str(uuid.uuid4())
            users.setdefault(_master_of(redis, notification_stream(user)), user)
        members = [_Member(user) for user in users.values()]
        for member in members:
            hub.join(member, hub.mark())
            member.woken.clear()  # (a join right after the subscription may wake it once)
        for member in members:
            await redis.xadd(notification_stream(member.user_id), {"type": "ping"})
        await asyncio.wait_for(asyncio.gather(*(m.woken.wait() for m in members)), 10)
    finally:
        await hub.stop()


async def test_the_hub_follows_a_master_that_joins_later(redis, cluster):
    """The master set changes (here a fourth node takes over one slot; a failover promoting a replica
    changes it the same way): the hub starts a feed for the new master without a restart, and an XADD to
    a stream now on it wakes its user. (Last in this module: it leaves the cluster with four masters.)"""
    hub = NotificationHub(redis, masters_seconds=0.2)
    await hub.start()
    try:
        member = _Member(await _user_in_an_empty_slot(redis))
        stream = notification_stream(member.user_id)
        port = await cluster.add_master()
        async with Redis(host="127.0.0.1", port=port) as new_node:
            new_id = (await new_node.execute_command("CLUSTER", "MYID")).decode()
            slot = redis.keyslot(stream)
            for node in redis.get_primaries():
                await redis.execute_command("CLUSTER", "SETSLOT", slot, "NODE", new_id, target_nodes=node)
            await new_node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", new_id)
        hub.join(member, hub.mark())
        # the new master's feed subscribes and, as every (re)subscription does, wakes every connection
        await asyncio.wait_for(member.woken.wait(), 30)
        assert f"127.0.0.1:{port}" in hub.masters
        member.woken.clear()
        await redis.xadd(stream, {"type": "ping"})  # the cluster client follows the slot's MOVED
        assert redis.nodes_manager.get_node_from_slot(slot).name == f"127.0.0.1:{port}"
        await asyncio.wait_for(member.woken.wait(), 10)
    finally:
        await hub.stop()
