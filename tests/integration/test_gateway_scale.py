"""The relay at scale: 10,000 WebSockets through Envoy to one relay process (`python -m gateway`), then all
of them dropped at once (SPEC §8: one relay process holds at least 10,000 idle sockets).

Clients are cheap sans-I/O sockets (scripts/ws_swarm.py), 5 per user (the per-user cap), so every user's
slots are full. Two private Envoy edges carry half each: a proxied WebSocket holds two of Envoy's file
descriptors, and this machine's hard open-file limit (20,000 per process) caps one Envoy below 10,000.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from gateway.streams import connections_key
from scripts.devtokens import mint
from scripts.ws_swarm import SwarmSocket, open_all
from server.core.uow import notification_stream
from tests.support.gateway import relay_process
from tests.support.processes import PrivateEnvoy, wait_for_port

SOCKETS = 10_000
PER_USER = 5
EDGES = 2


@pytest.fixture(scope="module")
async def relay():
    async with relay_process(WS_MAX_CONNECTIONS_PER_USER=str(PER_USER)) as process:
        yield process


@pytest.fixture(scope="module")
async def edges(relay, tmp_path_factory):
    envoys = [
        PrivateEnvoy(tmp_path_factory.mktemp(f"edge{n}"), GATEWAY_UPSTREAMS=f"127.0.0.1:{relay.port}")
        for n in range(EDGES)
    ]
    try:
        for envoy in envoys:
            envoy.start()
        for envoy in envoys:
            await wait_for_port(envoy.port)
        yield envoys
    finally:
        for envoy in envoys:
            envoy.stop()


async def _slots(redis, users: list[str]) -> list[int]:
    async with redis.pipeline(transaction=False) as pipe:
        for user in users:
            pipe.zcard(connections_key(user))
        return await pipe.execute()


async def _wait_until(predicate, timeout: float = 120.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def _notify_and_collect(redis, user: str, sockets: list[SwarmSocket], inbox: dict) -> None:
    """XADDs one notification for `user` and waits until every one of `sockets` got it."""
    entry_id = (
        await redis.xadd(
            notification_stream(user), {"type": "achievementUnlocked", "payload": json.dumps({})}
        )
    ).decode()
    waiting = [
        inbox.setdefault((id(s), entry_id), asyncio.get_running_loop().create_future()) for s in sockets
    ]
    await asyncio.wait_for(asyncio.gather(*waiting), 15)


def _inbox_callback(inbox: dict, sockets: list[SwarmSocket]):
    """on_text for socket number i: resolves the future waiting for that socket and notification id."""

    def for_socket(index: int):
        def on_text(text: str) -> None:
            frame = json.loads(text)
            key = (id(sockets[index]), frame["id"])
            future = inbox.setdefault(key, asyncio.get_running_loop().create_future())
            if not future.done():
                future.set_result(frame)

        return on_text

    return for_socket


@pytest.mark.scale
async def test_ten_thousand_sockets_through_envoy_then_all_dropped_at_once(relay, edges, redis):
    users = [str(uuid.uuid4()) for _ in range(SOCKETS // PER_USER)]
    tokens = [mint(user) for user in users]
    targets = [(edges[i % EDGES].port, tokens[i // PER_USER]) for i in range(SOCKETS)]
    inbox: dict = {}
    sockets: list[SwarmSocket] = []
    sockets += await open_all(targets, on_text=_inbox_callback(inbox, sockets))
    try:
        await _wait_until(lambda: _equals(relay.open_connections(), SOCKETS))
        assert set(await _slots(redis, users)) == {PER_USER}
        # live: a notification reaches each socket of its user (both edges), among 10,000 open ones
        for n in (0, len(users) // 2, len(users) - 1):
            await _notify_and_collect(redis, users[n], sockets[n * PER_USER : (n + 1) * PER_USER], inbox)
        memory = relay.rss_bytes()
        print(f"relay RSS with {SOCKETS} sockets: {memory / 2**20:.0f} MiB")
    finally:
        for socket in sockets:  # every socket dropped at once (RST), as when a client fleet loses its network
            socket.abort()
    await _wait_until(lambda: _equals(relay.open_connections(), 0))
    await _wait_until(lambda: _all_zero(_slots(redis, users)))
    # a user whose slots were all taken gets all of them again (no slot outlived its socket)
    again: list[SwarmSocket] = []
    again += await open_all([(edges[0].port, tokens[0])] * PER_USER, on_text=_inbox_callback(inbox, again))
    try:
        await _notify_and_collect(redis, users[0], again, inbox)
        assert all(s.close_code is None for s in again)
    finally:
        for socket in again:
            socket.abort()
    await _wait_until(lambda: _equals(relay.open_connections(), 0))


async def _equals(awaitable, expected: int) -> bool:
    return await awaitable == expected


async def _all_zero(awaitable) -> bool:
    return not any(await awaitable)
