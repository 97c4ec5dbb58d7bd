"""The WebSocket notification relay (SPEC §8): per-user Redis stream → WebSocket frames.

One connection = one authenticated user on one channel (library or download). The opening handshake checks
the path (404), the process's capacity (503 over WS_MAX_CONNECTIONS), the JWT (`Authorization: Bearer` or
`?token=`; 401, or 403 for a non-user token), then in one Redis round trip takes one of the user's
connection slots (shared by every instance) and pins the connection's cursor to the newest entry of the
user's stream, so anything added after the client sees the 101 is delivered. Over the per-user cap the
connection is closed with 1008 right after the handshake; a slot whose handshake then fails is given back
(_RelayConnection). An open connection joins the process's hub (gateway.hub: one Redis subscriber tells
the connections of a user when their stream grew; gateway.session sends what is new). The connection's
own task only receives client messages: `ping` → `pong`, `ack`, `resume` (replay what this connection has
not sent, in order, then continue live), anything else → an `error` frame, the connection stays open.
When the token expires the connection is closed with 1008 (the client reconnects with a fresh token and
resumes).

Every send must complete within WS_SEND_TIMEOUT_SECONDS; the write buffer is bounded by
WS_WRITE_LIMIT_BYTES and a connection reads Redis only after its previous send went through, so a client
that stops reading costs at most one buffer and one batch, and is then cut off (close 1013, or an abort when
even the close frame cannot be written). Redis is the only buffer: a reconnecting client resumes from its
last id and misses nothing retained.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import logging
import random
import struct
import time
import weakref
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from redis.exceptions import RedisError
from websockets.asyncio.connection import broadcast
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from gateway import protocol
from gateway.hub import NotificationHub
from gateway.keepalive import Keepalive
from gateway.protocol import Ping, ProtocolError, Resume
from gateway.session import Session, SlowConsumer
from gateway.streams import (
    REFRESH_BATCH,
    REFRESH_INTERVAL_SECONDS,
    NotificationStreams,
    SlotReleaser,
    ensure_keyspace_events,
)
from server.core import metrics
from server.core.auth import TokenVerifier, bearer_token
from server.core.config import Settings
from server.core.errors import PermissionDenied, Unauthenticated
from server.core.redis import RedisClient

log = logging.getLogger(__name__)
# websockets logs request lines (with ?token=) at DEBUG, and every connection at INFO (gateway.app logs
# them with the user): its logger stays at WARNING whatever LOG_LEVEL says.
_ws_log = logging.getLogger("gateway.websockets")
_ws_log.setLevel(logging.WARNING)

MAX_CLIENT_MESSAGE_BYTES = 16 * 1024  # client messages are tiny; larger ones close with 1009
CLOSE_TIMEOUT_SECONDS = 2.0
# A handshake waits for its token check and a Redis round trip; in a burst of thousands on a busy host
# that can take longer than websockets' default 10 s (the socket would be dropped: Envoy answers 503).
HANDSHAKE_TIMEOUT_SECONDS = 30.0
TOKEN_EXPIRED = "token expired; reconnect with a fresh token and resume"


class Gateway:
    def __init__(self, settings: Settings, verifier: TokenVerifier, redis: RedisClient):
        self._settings = settings
        self._verifier = verifier
        self._redis = redis
        self._streams = NotificationStreams(redis)
        self._hub = NotificationHub(redis)
        self._releaser = SlotReleaser(self._streams)
        interval = settings.ws_ping_interval_seconds
        self._keepalive = Keepalive(interval) if interval else None
        # handshakes that passed process_request: (took a slot, session); the handler takes it, or
        # _handshake_failed when the handshake then fails (weak all the same)
        self._sessions: weakref.WeakKeyDictionary[ServerConnection, tuple[bool, Session]] = (
            weakref.WeakKeyDictionary()
        )
        self._slots: dict[str, str] = {}  # connection id → user id, refreshed while open
        self._closing: set[asyncio.Task] = set()  # closes started by timers (token expiry)
        self._server: Server | None = None
        self._refresher: asyncio.Task | None = None
        self._stopping = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def open_connections(self) -> int:
        """Connections holding a slot on this instance."""
        return len(self._slots)

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        s = self._settings
        await ensure_keyspace_events(self._redis)
        await self._hub.start()
        self._releaser.start()
        if self._keepalive is not None:
            self._keepalive.start()
        self._server = await serve(
            self._handle,
            host or s.ws_host,
            s.ws_port if port is None else port,
            process_request=self._process_request,
            create_connection=functools.partial(_RelayConnection, self._handshake_failed),
            ping_interval=None,  # gateway.keepalive pings every connection from one timer
            ping_timeout=None,
            open_timeout=HANDSHAKE_TIMEOUT_SECONDS,
            close_timeout=CLOSE_TIMEOUT_SECONDS,
            max_size=MAX_CLIENT_MESSAGE_BYTES,
            max_queue=16,
            write_limit=s.ws_write_limit_bytes,
            server_header=None,
            logger=_ws_log,
            # handshake bursts (a fleet of clients reconnecting) queue here instead of being refused
            backlog=s.ws_backlog,
        )
        self._refresher = asyncio.create_task(self._refresh_slots(), name="ws-slot-refresher")
        log.info("gateway serving", extra={"ws": f"{host or s.ws_host}:{self.port}"})

    async def stop(self, grace: float = 10.0) -> None:
        """Stops accepting, closes every connection with 1001 (going away); aborts what is still open after
        `grace` seconds (clients that do not read cannot receive the close frame)."""
        if self._server is None:
            return
        self._server.close(close_connections=True)
        try:
            await asyncio.wait_for(self._server.wait_closed(), grace)
        except TimeoutError:
            for connection in list(self._server.connections):
                connection.transport.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), CLOSE_TIMEOUT_SECONDS)
        self._stopping.set()
        if self._refresher is not None:
            await asyncio.wait({self._refresher}, timeout=CLOSE_TIMEOUT_SECONDS)
        await self._releaser.stop(CLOSE_TIMEOUT_SECONDS)
        if self._keepalive is not None:
            self._keepalive.stop()
        await self._hub.stop()
        self._server = None
        log.info("gateway stopped")

    # ---- opening handshake ----

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        channel = protocol.channel_for_path(url.path)
        if channel is None:
            return ws.respond(http.HTTPStatus.NOT_FOUND, "unknown WebSocket path\n")
        if len(self._slots) >= self._settings.ws_max_connections:
            log.warning("handshake refused: relay at capacity", extra={"open": len(self._slots)})
            return ws.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "relay at capacity, retry later\n")
        token = bearer_token(request.headers.get("Authorization", ""))
        if token is None:
            token = next(iter(parse_qs(url.query).get("token", [])), None)
        if not token:
            return _unauthorized(ws, "missing bearer token")
        try:
            principal, expires_at = await self._verifier.authenticate_until(token)
            user_id = str(principal.user_id)
        except Unauthenticated as exc:
            return _unauthorized(ws, str(exc))
        except PermissionDenied as exc:
            return ws.respond(http.HTTPStatus.FORBIDDEN, f"{exc}\n")
        since = self._hub.mark()
        cap = self._settings.ws_max_connections_per_user
        try:
            admitted, newest = await self._streams.open_slot(user_id, str(ws.id), cap)
        except (RedisError, OSError):
            log.warning("notification stream unavailable", exc_info=True)
            return ws.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "notifications unavailable, retry later\n")
        self._sessions[ws] = (
            admitted,
            Session(
                ws,
                user_id,
                channel,
                newest,
                streams=self._streams,
                send=self._send,
                cut_off=self._cut_off,
                opened_at=time.monotonic(),
                expires_at=expires_at,
                since=since,
            ),
        )
        return None

    # ---- connection ----

    def _handshake_failed(self, ws: ServerConnection) -> None:
        """The handshake did not open the connection (refused, timed out, client gone): the handler never
        runs, so a slot taken in _process_request is given back here."""
        admitted, session = self._sessions.pop(ws, (False, None))
        if admitted and session is not None:
            self._releaser.release(session.user_id, str(ws.id))

    async def _handle(self, ws: ServerConnection) -> None:
        admitted, session = self._sessions.pop(ws)
        connection_id = str(ws.id)
        fields = {"user_id": session.user_id, "channel": session.channel, "connection_id": connection_id}
        if not admitted:
            cap = self._settings.ws_max_connections_per_user
            log.info("connection refused: per-user cap reached", extra={**fields, "cap": cap})
            await ws.close(CloseCode.POLICY_VIOLATION, f"too many connections for this user (max {cap})")
            return
        self._slots[connection_id] = session.user_id
        metrics.WS_CONNECTIONS.inc()
        log.info("connection opened", extra=fields)
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, session.expires_at - time.time()), self._expire, session
        )
        self._hub.join(session, session.since)
        if self._keepalive is not None:
            self._keepalive.add(ws)
        try:
            await self._receive(ws, session)
        finally:
            expiry.cancel()
            if self._keepalive is not None:
                self._keepalive.discard(ws)
            self._hub.leave(session)
            del self._slots[connection_id]
            metrics.WS_CONNECTIONS.dec()
            self._releaser.release(session.user_id, connection_id)
            log.info(
                "connection closed",
                extra={
                    **fields,
                    "close_code": ws.close_code,
                    "duration_ms": round((time.monotonic() - session.opened_at) * 1000),
                },
            )

    async def _receive(self, ws: ServerConnection, session: Session) -> None:
        try:
            async for data in ws:
                message = protocol.parse_client_message(data)
                if isinstance(message, ProtocolError):
                    await self._send(ws, message.encode())
                elif isinstance(message, Ping):
                    await self._send(ws, protocol.encode_pong(message.id))
                elif isinstance(message, Resume):
                    session.resume(message.last_id)
                # Ack: delivery is at least once; the client's cursor is its own (it resumes from it)
        except SlowConsumer:
            await self._cut_off(ws)
        except ConnectionClosed:
            pass

    def _expire(self, session: Session) -> None:
        log.info("closing a connection whose token expired", extra={"connection_id": str(session.ws.id)})
        task = asyncio.create_task(self._close(session.ws, CloseCode.POLICY_VIOLATION, TOKEN_EXPIRED))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _send(self, ws: ServerConnection, text: str) -> None:
        if ws.protocol.state is State.OPEN and not ws.transport.get_write_buffer_size():
            # Nothing waits in the write buffer: write the frame now, as ws.send would, without its context
            # manager, drain and timeout (most of a send's CPU). A client that stops reading fills the
            # buffer, and its next send takes the bounded path below.
            broadcast((ws,), text)
            return
        try:  # asyncio.timeout, not wait_for: that would run each send in a task of its own
            async with asyncio.timeout(self._settings.ws_send_timeout_seconds):
                await ws.send(text)
        except TimeoutError:
            raise SlowConsumer from None

    async def _cut_off(self, ws: ServerConnection) -> None:
        """Closes a connection whose client stopped reading (1013: try again later, then resume)."""
        log.info("cutting off a slow client", extra={"connection_id": str(ws.id)})
        await self._close(ws, CloseCode.TRY_AGAIN_LATER, "client too slow; reconnect and resume")

    async def _close(self, ws: ServerConnection, code: CloseCode, reason: str) -> None:
        """Closes with code/reason; aborts when even the close frame cannot be written in time."""
        try:
            await asyncio.wait_for(ws.close(code, reason), CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            ws.transport.abort()

    async def _refresh_slots(self) -> None:
        """Keeps this instance's connection slots alive (a crashed instance's slots expire by themselves):
        REFRESH_BATCH slots per round trip, the batches spread evenly over each REFRESH_INTERVAL_SECONDS,
        so that 10,000 slots cost the loop a small batch now and then, not a burst of forty every interval."""
        while True:
            slots = [(user, connection) for connection, user in self._slots.items()]
            batches = [slots[start : start + REFRESH_BATCH] for start in range(0, len(slots), REFRESH_BATCH)]
            pause = REFRESH_INTERVAL_SECONDS / max(1, len(batches))
            for batch in batches or [[]]:
                if await self._stopped_within(pause):
                    return
                if not batch:
                    continue
                try:  # a slot closed since is not renewed (only existing members are extended)
                    await self._streams.refresh_slots(batch)
                except (RedisError, OSError):
                    log.warning("refreshing connection slots failed", exc_info=True)

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self._stopping.is_set()


class _RelayConnection(ServerConnection):
    """A server connection that says when its opening handshake did not open it (websockets then drops
    the connection without calling the handler), and that gateway.keepalive pings."""

    def __init__(self, on_failed_handshake: Callable[[ServerConnection], None], *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._on_failed_handshake = on_failed_handshake
        self._keepalive_ping: bytes | None = None

    def keepalive(self) -> None:
        """Closes the connection (1011) if the last keepalive ping is unanswered, else sends the next one.
        The ping is registered as ws.ping() registers it, so the pong is acknowledged (and `latency` kept)
        by websockets itself; nothing here waits."""
        if self.protocol.state is not State.OPEN:
            return
        if self._keepalive_ping is not None and self._keepalive_ping in self.pending_pings:
            log.info(
                "closing a connection that did not answer a keepalive ping",
                extra={"connection_id": str(self.id)},
            )
            self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self.send_data()
            self.transport.abort()
            return
        data = struct.pack("!I", random.getrandbits(32))
        while data in self.pending_pings:
            data = struct.pack("!I", random.getrandbits(32))
        self.pending_pings[data] = (self.loop.create_future(), self.loop.time())
        self._keepalive_ping = data
        self.protocol.send_ping(data)
        self.send_data()

    async def handshake(self, *args, **kwargs) -> None:
        try:
            await super().handshake(*args, **kwargs)
        finally:
            if self.protocol.state is not State.OPEN:
                self._on_failed_handshake(self)


def _unauthorized(ws: ServerConnection, reason: str) -> Response:
    response = ws.respond(http.HTTPStatus.UNAUTHORIZED, f"{reason}\n")
    response.headers["WWW-Authenticate"] = 'Bearer realm="library"'
    return response
