"""The WebSocket notification relay (SPEC §8): per-user Redis stream → WebSocket frames.

One connection = one authenticated user on one channel (library or download). The opening handshake checks
the path (404), the JWT (`Authorization: Bearer` or `?token=`; 401, or 403 for a non-user token) and pins
the connection's cursor to the newest entry of the user's stream, so anything added after the client sees
the 101 is delivered. After the handshake the connection takes one of the user's connection slots (shared by
every instance; over the cap → close 1008), then two loops run until it closes:

- the pump: XREAD BLOCK from the cursor, filter by the channel's types, send each notification;
- the receiver: client messages — `ping` → `pong`, `ack`, `resume` (replay what this connection has not
  sent, then continue live), anything else → an `error` frame, the connection stays open.

Every send must complete within WS_SEND_TIMEOUT_SECONDS; the write buffer is bounded by
WS_WRITE_LIMIT_BYTES and the pump reads Redis only after the previous send went through, so a client that
stops reading costs at most one buffer and one batch, and is then cut off (close 1013, or an abort when even
the close frame cannot be written). Redis is the only buffer: a reconnecting client resumes from its last id
and misses nothing retained.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import time
import weakref
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from gateway import protocol
from gateway.protocol import Ack, Ping, ProtocolError, Resume, StreamId, parse_stream_id
from gateway.streams import CONNECTION_TTL_MS, READ_COUNT, NotificationStreams
from server.core import metrics
from server.core.auth import TokenVerifier, bearer_token
from server.core.config import Settings
from server.core.errors import PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)
# websockets logs request lines (with ?token=) at DEBUG, and every connection at INFO (gateway.app logs
# them with the user): its logger stays at WARNING whatever LOG_LEVEL says.
_ws_log = logging.getLogger("gateway.websockets")
_ws_log.setLevel(logging.WARNING)

MAX_CLIENT_MESSAGE_BYTES = 16 * 1024  # client messages are tiny; larger ones close with 1009
CLOSE_TIMEOUT_SECONDS = 2.0


class SlowConsumer(Exception):
    """A send did not complete in time: the client is not reading."""


@dataclass(slots=True)
class Session:
    user_id: str
    channel: str
    types: frozenset[str]
    # This connection has sent every wanted entry in (floor, cursor]; entries <= skip_through are the
    # client's already (it resumed from there) and are not sent again.
    floor: StreamId
    cursor: StreamId
    skip_through: StreamId
    opened_at: float


class Gateway:
    def __init__(self, settings: Settings, verifier: TokenVerifier, redis: Redis):
        self._settings = settings
        self._verifier = verifier
        self._streams = NotificationStreams(redis)
        # handshakes that passed process_request; the handler takes its session (weak: a handshake may fail)
        self._sessions: weakref.WeakKeyDictionary[ServerConnection, Session] = weakref.WeakKeyDictionary()
        self._slots: dict[str, str] = {}  # connection id → user id, refreshed while open
        self._server: Server | None = None
        self._refresher: asyncio.Task | None = None

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
        self._server = await serve(
            self._handle,
            host or s.ws_host,
            s.ws_port if port is None else port,
            process_request=self._process_request,
            ping_interval=s.ws_ping_interval_seconds or None,
            ping_timeout=s.ws_ping_interval_seconds or None,
            close_timeout=CLOSE_TIMEOUT_SECONDS,
            max_size=MAX_CLIENT_MESSAGE_BYTES,
            max_queue=16,
            write_limit=s.ws_write_limit_bytes,
            server_header=None,
            logger=_ws_log,
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
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        self._server = None
        log.info("gateway stopped")

    # ---- opening handshake ----

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        channel = protocol.channel_for_path(url.path)
        if channel is None:
            return ws.respond(http.HTTPStatus.NOT_FOUND, "unknown WebSocket path\n")
        token = bearer_token(request.headers.get("Authorization", ""))
        if token is None:
            token = next(iter(parse_qs(url.query).get("token", [])), None)
        if not token:
            return _unauthorized(ws, "missing bearer token")
        try:
            user_id = str((await self._verifier.authenticate(token)).user_id)
        except Unauthenticated as exc:
            return _unauthorized(ws, str(exc))
        except PermissionDenied as exc:
            return ws.respond(http.HTTPStatus.FORBIDDEN, f"{exc}\n")
        try:
            newest = await self._streams.last_id(user_id)
        except (RedisError, OSError):
            log.warning("notification stream unavailable", exc_info=True)
            return ws.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "notifications unavailable, retry later\n")
        self._sessions[ws] = Session(
            user_id=user_id,
            channel=channel,
            types=protocol.CHANNEL_TYPES[channel],
            floor=newest,
            cursor=newest,
            skip_through=(0, 0),
            opened_at=time.monotonic(),
        )
        return None

    # ---- connection ----

    async def _handle(self, ws: ServerConnection) -> None:
        session = self._sessions.pop(ws)
        connection_id = str(ws.id)
        fields = {"user_id": session.user_id, "channel": session.channel, "connection_id": connection_id}
        cap = self._settings.ws_max_connections_per_user
        try:
            admitted = await self._streams.acquire_slot(session.user_id, connection_id, cap)
        except (RedisError, OSError):
            log.warning("could not take a connection slot", extra=fields, exc_info=True)
            await ws.close(CloseCode.TRY_AGAIN_LATER, "notifications unavailable, retry later")
            return
        if not admitted:
            log.info("connection refused: per-user cap reached", extra={**fields, "cap": cap})
            await ws.close(CloseCode.POLICY_VIOLATION, f"too many connections for this user (max {cap})")
            return
        self._slots[connection_id] = session.user_id
        metrics.WS_CONNECTIONS.inc()
        log.info("connection opened", extra=fields)
        pump = asyncio.create_task(self._pump(ws, session), name=f"ws-pump-{connection_id}")
        try:
            await self._receive(ws, session)
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            del self._slots[connection_id]
            metrics.WS_CONNECTIONS.dec()
            try:
                await self._streams.release_slot(session.user_id, connection_id)
            except (RedisError, OSError):  # the slot expires on its own
                log.warning("could not release connection slot", extra=fields, exc_info=True)
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
                    try:
                        await self._resume(ws, session, message.last_id)
                    except (RedisError, OSError):
                        log.warning("replaying the notification stream failed", exc_info=True)
                        await self._send(
                            ws,
                            protocol.encode_error(
                                "notifications unavailable, resume again later",
                                message_id=message.id,
                                code="UNAVAILABLE",
                            ),
                        )
                elif isinstance(message, Ack):
                    pass  # delivery is at least once; the client's cursor is its own (it resumes from it)
        except SlowConsumer:
            await self._cut_off(ws)
        except ConnectionClosed:
            pass

    async def _pump(self, ws: ServerConnection, session: Session) -> None:
        backoff = 0.1
        try:
            while True:
                try:
                    entries = await self._streams.read(session.user_id, session.cursor)
                except (RedisError, OSError):
                    log.warning("reading the notification stream failed; retrying", exc_info=True)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.1
                for entry_id, fields in entries:
                    stream_id = parse_stream_id(entry_id) or session.cursor
                    session.cursor = stream_id
                    if stream_id > session.skip_through:
                        await self._deliver(ws, session, entry_id, fields)
        except SlowConsumer:
            await self._cut_off(ws)
        except ConnectionClosed:
            pass

    async def _resume(self, ws: ServerConnection, session: Session, last_id: StreamId) -> None:
        """The client has everything up to last_id: send what is retained after it and not sent yet."""
        if last_id >= session.floor:
            session.skip_through = max(session.skip_through, last_id)
            return
        after, through = last_id, session.floor
        session.floor = last_id
        while True:
            entries = await self._streams.range(session.user_id, after, through)
            for entry_id, fields in entries:
                if (stream_id := parse_stream_id(entry_id)) is not None:
                    after = stream_id
                await self._deliver(ws, session, entry_id, fields)
            if len(entries) < READ_COUNT:
                return

    async def _deliver(self, ws: ServerConnection, session: Session, entry_id: str, fields) -> None:
        decoded = protocol.decode_entry(fields)
        if decoded is None:
            log.warning("skipping a malformed notification entry", extra={"entry_id": entry_id})
            return
        message_type, payload = decoded
        if message_type in session.types:
            await self._send(ws, protocol.encode_notification(entry_id, message_type, payload))

    async def _send(self, ws: ServerConnection, text: str) -> None:
        try:
            await asyncio.wait_for(ws.send(text), self._settings.ws_send_timeout_seconds)
        except TimeoutError:
            raise SlowConsumer from None

    async def _cut_off(self, ws: ServerConnection) -> None:
        """Closes a connection whose client stopped reading (1013: try again later, then resume)."""
        log.info("cutting off a slow client", extra={"connection_id": str(ws.id)})
        try:
            await asyncio.wait_for(
                ws.close(CloseCode.TRY_AGAIN_LATER, "client too slow; reconnect and resume"),
                CLOSE_TIMEOUT_SECONDS,
            )
        except TimeoutError:
            ws.transport.abort()

    async def _refresh_slots(self) -> None:
        """Keeps this instance's connection slots alive (a crashed instance's slots expire by themselves)."""
        while True:
            await asyncio.sleep(CONNECTION_TTL_MS / 1000 / 3)
            try:
                await self._streams.refresh_slots(
                    [(user, connection) for connection, user in self._slots.items()]
                )
            except (RedisError, OSError):
                log.warning("refreshing connection slots failed", exc_info=True)


def _unauthorized(ws: ServerConnection, reason: str) -> Response:
    response = ws.respond(http.HTTPStatus.UNAUTHORIZED, f"{reason}\n")
    response.headers["WWW-Authenticate"] = 'Bearer realm="library"'
    return response
