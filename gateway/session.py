"""One connection's delivery: its cursor in the user's stream, resumes, and the task that sends.

Delivery runs in a task of its own only while there is something to send (an idle connection has none),
started by `wake()` (the hub saw an XADD for the user) or `resume()`. That task walks the stream in order:
first every pending replay range, oldest requested first, then the live tail from the cursor. So a resume
is delivered whole and in order before live notifications continue, and live ones that arrive meanwhile
wait in Redis (the only buffer) until the replay is done.

The task is never cancelled: it only awaits Redis (bounded by the client's socket timeout) and sends
(bounded by the send timeout), and it ends by itself once the connection is closed. Cancelling a task
inside redis-py's timeout wrappers can be lost on Python 3.11, which used to leave connections (and their
per-user slots) alive after their sockets closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from gateway import protocol
from gateway.protocol import StreamId, parse_stream_id
from gateway.streams import READ_COUNT, NotificationStreams

log = logging.getLogger(__name__)


class SlowConsumer(Exception):
    """A send did not complete in time: the client is not reading."""


class Session:
    """This connection has sent every wanted entry in (floor, cursor]; entries <= skip_through are the
    client's already (it resumed from there) and are not sent again."""

    __slots__ = (
        "_cut_off",
        "_dirty",
        "_replays",
        "_send",
        "_sender",
        "_streams",
        "channel",
        "cursor",
        "expires_at",
        "floor",
        "opened_at",
        "since",
        "skip_through",
        "types",
        "user_id",
        "ws",
    )

    def __init__(
        self,
        ws: ServerConnection,
        user_id: str,
        channel: str,
        newest: StreamId,
        *,
        streams: NotificationStreams,
        send: Callable[[ServerConnection, str], Awaitable[None]],
        cut_off: Callable[[ServerConnection], Awaitable[None]],
        opened_at: float,
        expires_at: float,
        since: int,
    ):
        self.ws = ws
        self.user_id = user_id
        self.channel = channel
        self.types = protocol.CHANNEL_TYPES[channel]
        self.floor = self.cursor = newest
        self.skip_through: StreamId = (0, 0)
        self.opened_at = opened_at
        self.expires_at = expires_at  # time.time() after which the token no longer verifies
        self.since = since  # the hub's mark before the cursor was pinned
        self._replays: deque[list[StreamId]] = deque()
        self._dirty = False
        self._sender: asyncio.Task | None = None
        self._streams, self._send, self._cut_off = streams, send, cut_off

    @property
    def sending(self) -> bool:
        return self._sender is not None

    def wake(self) -> None:
        """The user's stream may have new entries."""
        self._dirty = True
        self._start()

    def resume(self, last_id: StreamId) -> None:
        """The client has everything up to last_id: send what is retained after it and not sent yet (before
        anything live)."""
        if last_id >= self.floor:
            self.skip_through = max(self.skip_through, last_id)
            return
        self._replays.appendleft([last_id, self.floor])
        self.floor = last_id
        self._start()

    def _start(self) -> None:
        if self._sender is None and self.ws.close_code is None:
            # one name for all: formatting the connection's UUID per wake was a tenth of starting the task
            self._sender = asyncio.create_task(self._deliver(), name="ws-send")

    async def _deliver(self) -> None:
        backoff = 0.1
        try:
            while self._replays or self._dirty:
                try:
                    await self._step()
                    backoff = 0.1
                except (RedisError, OSError):
                    log.warning(
                        "reading the notification stream failed; retrying",
                        extra={"connection_id": str(self.ws.id)},
                        exc_info=True,
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
        except SlowConsumer:
            await self._cut_off(self.ws)
        except ConnectionClosed:
            pass
        finally:
            self._sender = None

    async def _step(self) -> None:
        if self._replays:
            replay = self._replays[0]  # [after, through]; a resume meanwhile goes before it
            entries = await self._streams.range(self.user_id, replay[0], replay[1])
            for entry_id, fields in entries:
                if (stream_id := parse_stream_id(entry_id)) is not None:
                    replay[0] = stream_id
                await self._deliver_entry(entry_id, fields)
            if len(entries) < READ_COUNT:
                self._replays.remove(replay)
            return
        self._dirty = False
        entries = await self._streams.after(self.user_id, self.cursor)
        for entry_id, fields in entries:
            if self._replays:  # a resume came in: its replay goes first, the rest of this batch after it
                self._dirty = True
                return
            stream_id = parse_stream_id(entry_id) or self.cursor
            self.cursor = stream_id
            if stream_id > self.skip_through:
                await self._deliver_entry(entry_id, fields)
        if len(entries) == READ_COUNT:
            self._dirty = True

    async def _deliver_entry(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        decoded = protocol.decode_entry(fields)
        if decoded is None:
            log.warning("skipping a malformed notification entry", extra={"entry_id": entry_id})
            return
        message_type, payload = decoded
        if message_type in self.types:
            await self._send(self.ws, protocol.encode_notification(entry_id, message_type, payload))
