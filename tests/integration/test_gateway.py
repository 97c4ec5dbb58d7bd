"""The WebSocket notification relay (SPEC §8) against the real Redis, over real WebSocket connections.

Each test gateway runs in-process on a free port (several of them share Redis, as instances do in
production); notifications are added to the user's stream the way the outbox relay adds them. The last test
goes through Envoy to the gateway on $WS_PORT (started here when nothing listens there yet).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import uuid

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, Frame, Opcode
from websockets.uri import parse_uri

from gateway.app import Gateway
from gateway.streams import connections_key
from scripts.devtokens import mint
from server.core.config import Settings
from server.core.events.kafka import KafkaPublisher
from server.core.events.relay import OutboxRelay, RelayOptions
from server.core.uow import UnitOfWorkFactory, notification_stream
from tests.support.gateway import start_gateway

LIBRARY = "/api/v1/ws/library"
DOWNLOAD = "/api/v1/ws/download"
QUIET = 0.4


@pytest.fixture(scope="module")
def gateway_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        ws_max_connections_per_user=2,
        ws_send_timeout_seconds=1.0,
        ws_write_limit_bytes=16 * 1024,
        ws_ping_interval_seconds=5.0,
    )


@pytest.fixture(scope="module")
async def gateway(gateway_settings: Settings, redis):
    gw = await start_gateway(gateway_settings, redis)
    yield gw
    await gw.stop(grace=5)


@pytest.fixture(scope="module")
async def other_gateway(gateway_settings: Settings, redis):
    """A second instance sharing the same Redis."""
    gw = await start_gateway(gateway_settings, redis)
    yield gw
    await gw.stop(grace=5)


def _url(gw: Gateway | int, path: str = LIBRARY, token: str | None = None) -> str:
    port = gw if isinstance(gw, int) else gw.port
    return f"ws://127.0.0.1:{port}{path}" + (f"?token={token}" if token else "")


def _open(gw: Gateway | int, user: str, path: str = LIBRARY, **kwargs):
    return connect(_url(gw, path, mint(user)), proxy=None, open_timeout=5, **kwargs)


async def _notify(redis, user: str, message_type: str, payload: dict) -> str:
    """XADDs a notification exactly as the outbox relay does (fields `type` and `payload` = JSON)."""
    entry_id = await redis.xadd(
        notification_stream(user),
        {"type": message_type, "payload": json.dumps(payload, separators=(",", ":"))},
        maxlen=1000,
        approximate=True,
    )
    return entry_id.decode()


async def _recv(ws: ClientConnection, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def _assert_quiet(ws: ClientConnection, seconds: float = QUIET) -> None:
    with pytest.raises(TimeoutError):
        frame = await asyncio.wait_for(ws.recv(), seconds)
        pytest.fail(f"unexpected frame {frame}")


async def _wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _user() -> str:
    return str(uuid.uuid4())


# ---- delivery ----


async def test_notification_arrives_with_type_id_and_payload(gateway, redis):
    user = _user()
    async with _open(gateway, user) as ws:
        payload = {"productId": str(uuid.uuid4()), "achievementId": "FIRST_BLOOD", "achievementName": "First"}
        entry_id = await _notify(redis, user, "achievementUnlocked", payload)
        assert await _recv(ws) == {"type": "achievementUnlocked", "id": entry_id, "payload": payload}


async def test_seed_alias_path_serves_the_library_channel(gateway, redis):
    user = _user()
    async with _open(gateway, user, "/ws/library/notifications") as ws:
        entry_id = await _notify(redis, user, "cloudSaveSynced", {"slotName": "slot1"})
        assert (await _recv(ws))["id"] == entry_id


async def test_a_new_connection_gets_only_new_notifications(gateway, redis):
    user = _user()
    await _notify(redis, user, "achievementUnlocked", {"n": "old"})
    async with _open(gateway, user) as ws:
        await _assert_quiet(ws)
        await _notify(redis, user, "achievementUnlocked", {"n": "new"})
        assert (await _recv(ws))["payload"] == {"n": "new"}


async def test_unit_of_work_notification_reaches_the_socket(gateway, redis, settings, sessions):
    """The production path: uow.notify → outbox row → relay → stream → socket."""
    # A relay of this process shares the outbox's partitions with the service's own relay (when one runs):
    # whichever owns the user's partition publishes the notification.
    relay = OutboxRelay(
        settings.database_url,
        redis,
        lambda: KafkaPublisher(settings.kafka_bootstrap_servers),
        RelayOptions(rebalance_seconds=0.5),
    )
    uow_factory = UnitOfWorkFactory(sessions, "/library-service/test", relay.wake)
    user = uuid.uuid4()
    task = asyncio.create_task(relay.run())
    try:
        async with _open(gateway, str(user)) as ws:
            async with uow_factory() as uow:
                uow.notify(user, "gameSettingsUpdated", {"productId": "p1", "etag": "e1"})
                await uow.commit()
            frame = await _recv(ws, timeout=20)
            assert frame["type"] == "gameSettingsUpdated"
            assert frame["payload"] == {"productId": "p1", "etag": "e1"}
            [(entry_id, _)] = await redis.xrange(notification_stream(user))
            assert frame["id"] == entry_id.decode()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_users_receive_only_their_own_notifications(gateway, other_gateway, redis):
    alice, bob = _user(), _user()
    async with _open(gateway, alice) as a, _open(other_gateway, bob) as b:
        await _notify(redis, alice, "wishlistGameOnSale", {"productName": "A", "discountPercent": "30%"})
        assert (await _recv(a))["payload"]["productName"] == "A"
        await _assert_quiet(b)
        await _notify(redis, bob, "wishlistGameOnSale", {"productName": "B", "discountPercent": "10%"})
        assert (await _recv(b))["payload"]["productName"] == "B"
        await _assert_quiet(a)


async def test_each_path_carries_only_its_types(gateway, redis):
    user = _user()
    async with _open(gateway, user, LIBRARY) as library, _open(gateway, user, DOWNLOAD) as download:
        progress = await _notify(redis, user, "downloadProgress", {"percent": 10})
        unlocked = await _notify(redis, user, "achievementUnlocked", {"achievementId": "A"})
        status = await _notify(redis, user, "downloadStatusChanged", {"status": "PAUSED"})
        await _notify(redis, user, "somethingElse", {})
        assert [(await _recv(download))["id"] for _ in range(2)] == [progress, status]
        assert (await _recv(library))["id"] == unlocked
        await _assert_quiet(library)
        await _assert_quiet(download)


async def test_any_instance_serves_any_user(gateway, other_gateway, redis):
    user = _user()
    async with _open(gateway, user) as one, _open(other_gateway, user) as two:
        entry_id = await _notify(redis, user, "cloudSaveConflict", {"productId": "p"})
        assert (await _recv(one))["id"] == entry_id
        assert (await _recv(two))["id"] == entry_id


# ---- authentication ----


async def _handshake_status(url: str, headers: dict[str, str] | None = None) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, proxy=None, open_timeout=5, additional_headers=headers):
            pass
    return refused.value.response.status_code


async def test_bad_or_missing_tokens_are_refused_at_the_handshake(gateway):
    user = _user()
    assert await _handshake_status(_url(gateway)) == 401
    assert await _handshake_status(_url(gateway, token="not-a-jwt")) == 401
    assert await _handshake_status(_url(gateway, token=mint(user, expired=True))) == 401
    assert await _handshake_status(_url(gateway), {"Authorization": "Bearer garbage"}) == 401
    assert await _handshake_status(_url(gateway), {"Authorization": f"Basic {mint(user)}"}) == 401
    service = mint("service:test", roles=("service",))
    assert await _handshake_status(_url(gateway, token=service)) == 403
    assert await _handshake_status(_url(gateway, "/api/v1/ws/nope", mint(user))) == 404
    assert gateway.open_connections == 0


async def test_bearer_header_authenticates(gateway, redis):
    user = _user()
    headers = {"Authorization": f"Bearer {mint(user)}"}
    async with connect(_url(gateway), proxy=None, additional_headers=headers) as ws:
        entry_id = await _notify(redis, user, "achievementUnlocked", {})
        assert (await _recv(ws))["id"] == entry_id


async def test_a_notification_added_while_the_feed_is_down_arrives_after_it_resubscribes(gateway, redis):
    """The hub's subscriber connection is killed (as by a Redis restart or a proxy): it subscribes again,
    and what was added meanwhile reaches the socket (the resubscription makes every socket read)."""
    user = _user()
    async with _open(gateway, user) as ws:
        await redis.client_kill_filter(_type="pubsub")
        entry_id = await _notify(redis, user, "achievementUnlocked", {"n": "during"})
        assert (await _recv(ws, timeout=15))["id"] == entry_id
        later = await _notify(redis, user, "achievementUnlocked", {"n": "after"})
        assert (await _recv(ws, timeout=15))["id"] == later


# ---- client messages ----


async def test_ping_gets_pong(gateway):
    async with _open(gateway, _user()) as ws:
        await ws.send(json.dumps({"type": "ping", "id": "p1"}))
        assert await _recv(ws) == {"type": "pong", "id": "p1", "payload": {}}
        await ws.send(json.dumps({"type": "ping"}))
        assert await _recv(ws) == {"type": "pong", "id": None, "payload": {}}
        # WebSocket-level keepalive is on as well
        await asyncio.wait_for(await ws.ping(), 5)


async def test_malformed_messages_get_an_error_and_the_connection_stays_open(gateway, redis):
    user = _user()
    async with _open(gateway, user) as ws:
        for raw, error_id in [
            ("{oops", None),
            (json.dumps({"type": "subscribe", "id": "s1"}), "s1"),
            (json.dumps({"type": "resume", "id": "r1"}), "r1"),
            (json.dumps({"type": "ack"}), None),
            (b"\x00\x01", None),
        ]:
            await ws.send(raw)
            error = await _recv(ws)
            assert error["type"] == "error"
            assert error["id"] == error_id
            assert error["payload"]["code"] == "VALIDATION_FAILED"
            assert error["payload"]["message"]
        entry_id = await _notify(redis, user, "achievementUnlocked", {})
        assert (await _recv(ws))["id"] == entry_id
        await ws.send(json.dumps({"type": "ack", "id": entry_id}))
        await _assert_quiet(ws)  # an ack has no reply


# ---- resume ----


async def _drain(ws: ClientConnection) -> list[dict]:
    frames = []
    while True:
        try:
            frames.append(await _recv(ws, timeout=QUIET))
        except TimeoutError:
            return frames


async def test_resume_after_disconnect_replays_missed_notifications_in_order(gateway, other_gateway, redis):
    user = _user()
    async with _open(gateway, user) as ws:
        first = await _notify(redis, user, "achievementUnlocked", {"n": 1})
        second = await _notify(redis, user, "achievementUnlocked", {"n": 2})
        assert [(await _recv(ws))["id"] for _ in range(2)] == [first, second]
    missed = [await _notify(redis, user, "achievementUnlocked", {"n": n}) for n in (3, 4, 5)]
    await _notify(redis, user, "downloadProgress", {"percent": 1})  # not for the library path
    # any instance can pick the client up again
    async with _open(other_gateway, user) as ws:
        await ws.send(json.dumps({"type": "resume", "payload": {"lastId": second}}))
        frames = await _drain(ws)
        live = await _notify(redis, user, "achievementUnlocked", {"n": 6})
        frames += await _drain(ws)
    assert [f["id"] for f in frames] == [*missed, live]
    assert [f["payload"]["n"] for f in frames] == [3, 4, 5, 6]


async def test_resume_does_not_repeat_what_the_connection_already_sent(gateway, redis):
    user = _user()
    seen = await _notify(redis, user, "achievementUnlocked", {"n": 1})
    missed = await _notify(redis, user, "achievementUnlocked", {"n": 2})
    async with _open(gateway, user) as ws:
        live = await _notify(redis, user, "achievementUnlocked", {"n": 3})
        assert (await _recv(ws))["id"] == live  # sent live before the client resumes
        await ws.send(json.dumps({"type": "resume", "payload": {"lastId": seen}}))
        await ws.send(json.dumps({"type": "resume", "payload": {"lastId": seen}}))  # repeated: no-op
        frames = await _drain(ws)
    assert [f["id"] for f in frames] == [missed]


async def test_resume_from_zero_replays_everything_retained(gateway, redis):
    user = _user()
    ids = [await _notify(redis, user, "cloudSaveSynced", {"n": n}) for n in range(3)]
    async with _open(gateway, user) as ws:
        await ws.send(json.dumps({"type": "resume", "payload": {"lastId": "0-0"}}))
        assert [f["id"] for f in await _drain(ws)] == ids


async def test_a_resume_is_delivered_whole_and_in_order_before_live_notifications_continue(gateway, redis):
    """A backlog of several read batches is replayed while new notifications keep arriving: the replay comes
    as one run in stream order, the live ones after it (none lost, none twice)."""
    user = _user()
    blob = "x" * 2048  # slows the replay down, so that the live ones arrive while it runs
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(350):
            entry = {"type": "cloudSaveSynced", "payload": json.dumps([n, blob])}
            pipe.xadd(notification_stream(user), entry)
        backlog = [entry_id.decode() for entry_id in await pipe.execute()]
    async with _open(gateway, user) as ws:
        await ws.send(json.dumps({"type": "resume", "payload": {"lastId": "0-0"}}))
        live = []
        for n in range(5):
            live.append(await _notify(redis, user, "cloudSaveSynced", {"live": n}))
            await asyncio.sleep(0.005)
        frames = [(await _recv(ws))["id"] for _ in range(len(backlog) + len(live))]
        await ws.send(json.dumps({"type": "ping", "id": "end"}))
        assert (await _recv(ws))["type"] == "pong"  # the sentinel: nothing else was sent before it
    assert sorted(frames) == sorted(backlog + live) and len(set(frames)) == len(frames)
    start = frames.index(backlog[0])
    assert frames[start : start + len(backlog)] == backlog  # one run, in order
    assert [f for f in frames if f in live] == live


async def test_a_socket_is_closed_with_1008_when_its_token_expires(gateway_settings, redis):
    """A short-lived token (no leeway on this instance): the open socket is closed with 1008 once the token
    no longer verifies; a fresh token reconnects and resumes without a gap."""
    gw = await start_gateway(dataclasses.replace(gateway_settings, jwt_leeway_seconds=0), redis)
    user = _user()
    try:
        async with connect(_url(gw, token=mint(user, ttl=2)), proxy=None, open_timeout=5) as ws:
            first = await _notify(redis, user, "achievementUnlocked", {"n": 1})
            assert (await _recv(ws))["id"] == first
            with pytest.raises(ConnectionClosed):
                await _recv(ws, timeout=10)
            assert ws.close_code == 1008
            assert "token expired" in ws.close_reason
        missed = await _notify(redis, user, "achievementUnlocked", {"n": 2})
        async with _open(gw, user) as ws:
            await ws.send(json.dumps({"type": "resume", "payload": {"lastId": first}}))
            assert (await _recv(ws))["id"] == missed
        await _wait_until(lambda: _zcard(redis, user, expect=0))
        assert gw.open_connections == 0
    finally:
        await gw.stop(grace=5)


# ---- keepalive ----


async def _raw_frames(port: int, user: str, *, answer_pings: bool):
    """The frames a bare client receives (websockets' sans-I/O protocol; its pongs are sent only when
    `answer_pings`), until the relay ends the connection."""
    protocol = ClientProtocol(parse_uri(_url(port, token=mint(user))))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    protocol.send_request(protocol.connect())
    try:
        for data in protocol.data_to_send():
            writer.write(data)
        while True:
            data = await reader.read(65536)
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            for event in protocol.events_received():
                if isinstance(event, Frame):
                    yield event
            outgoing = protocol.data_to_send()
            if answer_pings or protocol.handshake_exc is not None:
                for out in outgoing:
                    writer.write(out)
            if not data:
                return
    finally:
        writer.close()


async def test_keepalive_pings_every_socket_and_drops_one_that_never_answers(gateway_settings, redis):
    """One timer pings every connection (gateway.keepalive); a client that answers stays connected through
    several pings, one that never answers is closed (1011) and its slot given back."""
    gw = await start_gateway(dataclasses.replace(gateway_settings, ws_ping_interval_seconds=0.3), redis)
    try:
        answering, silent = _user(), _user()

        async def answers() -> str:
            pings = 0
            async for frame in _raw_frames(gw.port, answering, answer_pings=True):
                if frame.opcode is Opcode.PING:
                    pings += 1
                    if pings == 3:  # answered 3 pings: still connected, and notifications still arrive
                        await _notify(redis, answering, "achievementUnlocked", {"n": "alive"})
                elif frame.opcode is Opcode.TEXT and pings >= 3:
                    return json.loads(frame.data)["payload"]["n"]
            raise AssertionError("the answering client was disconnected")

        async def stays_silent() -> list[Opcode | int]:
            seen: list[Opcode | int] = []
            async for frame in _raw_frames(gw.port, silent, answer_pings=False):
                seen.append(Close.parse(frame.data).code if frame.opcode is Opcode.CLOSE else frame.opcode)
            return seen

        alive, silent_frames = await asyncio.wait_for(asyncio.gather(answers(), stays_silent()), 30)
        assert alive == "alive"
        assert silent_frames[0] is Opcode.PING and silent_frames[-1] == 1011, silent_frames
        await _wait_until(lambda: _zcard(redis, silent, expect=0))
    finally:
        await gw.stop(grace=5)


# ---- limits ----


async def test_per_user_connection_cap_holds_across_instances(gateway, other_gateway, redis):
    user = _user()
    async with _open(gateway, user) as one, _open(other_gateway, user) as two:
        async with _open(gateway, user) as third:
            with pytest.raises(ConnectionClosed):
                await _recv(third)
            assert third.close_code == 1008
            assert "too many connections" in third.close_reason
        await _notify(redis, user, "achievementUnlocked", {})
        await _recv(one)
        await _recv(two)
    await _wait_until(lambda: _zcard(redis, user, expect=0))
    # slots are given back on close
    async with _open(gateway, user) as again:
        entry_id = await _notify(redis, user, "achievementUnlocked", {})
        assert (await _recv(again))["id"] == entry_id


async def test_a_handshake_the_client_abandons_gives_its_slot_back(gateway, redis):
    """The handshake takes the slot (one Redis round trip with the cursor): clients that send their upgrade
    request and go away before the 101, more of them than the cap (2 here), hold none of the user's slots
    afterwards, and the user opens the cap's worth of connections."""
    user = _user()
    request = (
        f"GET {LIBRARY}?token={mint(user)} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    for _ in range(3):
        _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(request.encode())
        writer.close()  # the request, then FIN: gone before the answer
        await writer.wait_closed()

    async def opens_the_cap() -> bool:
        """(Until the relay has handled the abandoned handshakes, their slots may still be taken: 1008.)"""
        try:
            async with _open(gateway, user) as one, _open(gateway, user) as two:
                entry_id = await _notify(redis, user, "achievementUnlocked", {})
                assert (await _recv(one))["id"] == entry_id
                assert (await _recv(two))["id"] == entry_id
                return True
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1008, closed
            return False

    await _wait_until(opens_the_cap, timeout=30)
    await _wait_until(lambda: _zcard(redis, user, expect=0))


async def _zcard(redis, user: str, expect: int) -> bool:
    return await redis.zcard(connections_key(user)) == expect


async def test_a_client_that_never_reads_is_cut_off(gateway, redis):
    """With a tiny receive window and no reads, sends stall; the gateway closes the connection within the
    send timeout (1 s here) instead of buffering the flood."""
    user = _user()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.port))
    # no permessage-deflate: the flood must occupy its full size on the wire
    url = _url(gateway, token=mint(user))
    async with connect(url, sock=sock, proxy=None, max_queue=1, compression=None):
        await _wait_until(lambda: _zcard(redis, user, expect=1))
        blob = "x" * 64 * 1024
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(400):  # ~26 MB, far beyond every socket and write buffer on the way
                pipe.xadd(
                    notification_stream(user),
                    {"type": "achievementUnlocked", "payload": json.dumps({"n": n, "blob": blob})},
                )
            await pipe.execute()
        started = asyncio.get_running_loop().time()
        await _wait_until(lambda: _zcard(redis, user, expect=0), timeout=15)
        # send timeout (1 s) + close timeout (2 s: the close frame cannot get through either) + slack
        assert asyncio.get_running_loop().time() - started < 8
        assert gateway.open_connections == 0
    await redis.delete(notification_stream(user))


async def test_shutdown_closes_connections_with_going_away(gateway_settings, redis):
    gw = await start_gateway(gateway_settings, redis)
    async with _open(gw, _user()) as ws:
        await gw.stop(grace=5)
        with pytest.raises(ConnectionClosed):
            await _recv(ws)
        assert ws.close_code == 1001


# ---- through Envoy ----


async def test_envoy_refuses_a_bad_token_and_relays_both_paths_with_token_or_bearer_header(
    gateway_on_ws_port, redis
):
    envoy = int(os.environ.get("ENVOY_PORT", "8080"))
    user = _user()
    # the edge checks the JWT too
    assert await _handshake_status(_url(envoy, token="garbage")) == 401
    async with connect(_url(envoy, token=mint(user)), proxy=None, open_timeout=10) as ws:
        await ws.send(json.dumps({"type": "ping", "id": "edge"}))
        assert await _recv(ws) == {"type": "pong", "id": "edge", "payload": {}}
        entry_id = await _notify(redis, user, "achievementUnlocked", {"via": "envoy"})
        assert await _recv(ws) == {"type": "achievementUnlocked", "id": entry_id, "payload": {"via": "envoy"}}
    headers = {"Authorization": f"Bearer {mint(user)}"}
    async with connect(_url(envoy, DOWNLOAD), proxy=None, additional_headers=headers) as ws:
        entry_id = await _notify(redis, user, "downloadProgress", {"percent": 50})
        assert (await _recv(ws))["id"] == entry_id
