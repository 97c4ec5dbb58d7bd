"""Play sessions and playtime statistics (PlaytimeTrackerService), and the heartbeat loop of a running game.

The server's clock credits time: a session is credited from its heartbeats (start and end count), each gap
at most twice the interval the server gave at start. `SessionKeeper` heartbeats at that interval while the
game runs; a heartbeat that fails is retried sooner (it never waits on the game, nor the game on it), and a
session the server no longer knows (reaped after the machine slept) is replaced by a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc

from client.sdk.connection import Connection
from library.v1 import playtime_service_pb2 as pb
from library.v1 import playtime_service_pb2_grpc


@dataclass(frozen=True)
class PlaySession:
    session_id: str
    product_id: str
    device_id: str
    heartbeat_interval: float  # seconds, as the server said
    started_at: datetime | None
    resumed: bool


@dataclass(frozen=True)
class SessionEnded:
    session_id: str
    credited_seconds: int
    total_playtime_seconds: int
    last_two_weeks_seconds: int


@dataclass(frozen=True)
class PlaytimeStats:
    product_id: str
    total_seconds: int
    last_two_weeks_seconds: int
    last_played_at: datetime | None
    device_seconds: dict[str, int]


def _time(message, name: str) -> datetime | None:
    return getattr(message, name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None


class PlaytimeClient:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._stub = playtime_service_pb2_grpc.PlaytimeTrackerServiceStub(connection.channel)

    async def start(self, product_id: str, device_id: str) -> PlaySession:
        reply = await self._connection.call(
            self._stub.StartPlaytimeSession,
            pb.StartPlaytimeSessionRequest(product_id=product_id, device_id=device_id),
        )
        return PlaySession(
            session_id=reply.session_id,
            product_id=product_id,
            device_id=device_id,
            heartbeat_interval=float(reply.heartbeat_interval_seconds or 60),
            started_at=_time(reply, "started_at"),
            resumed=reply.resumed,
        )

    async def heartbeat(self, session: PlaySession) -> None:
        request = pb.RecordPlaytimeHeartbeatRequest(
            product_id=session.product_id, session_id=session.session_id
        )
        request.current_timestamp.GetCurrentTime()
        # A heartbeat older than the next one is worthless: give up on it by then.
        await self._connection.call(
            self._stub.RecordPlaytimeHeartbeat, request, timeout=max(1.0, session.heartbeat_interval)
        )

    async def end(self, session: PlaySession) -> SessionEnded:
        reply = await self._connection.call(
            self._stub.EndPlaytimeSession,
            pb.EndPlaytimeSessionRequest(product_id=session.product_id, session_id=session.session_id),
        )
        return SessionEnded(
            session_id=reply.session_id,
            credited_seconds=reply.credited_duration_seconds,
            total_playtime_seconds=reply.total_playtime_seconds,
            last_two_weeks_seconds=reply.last_two_weeks_seconds,
        )

    async def stats(self, *product_ids: str) -> list[PlaytimeStats]:
        reply = await self._connection.call(
            self._stub.GetPlaytimeStats, pb.GetPlaytimeStatsRequest(product_ids=list(product_ids))
        )
        return [
            PlaytimeStats(
                product_id=s.product_id,
                total_seconds=s.total_playtime_seconds,
                last_two_weeks_seconds=s.last_two_weeks_seconds,
                last_played_at=_time(s, "last_played_at"),
                device_seconds={d.device_id: d.playtime_seconds for d in s.device_totals},
            )
            for s in reply.stats
        ]


def retry_delay(interval: float) -> float:
    """How soon a failed heartbeat is tried again: a quarter interval (at least 1 s, at most the interval),
    so one lost heartbeat still lands well inside the 2x-interval gap the server credits."""
    return min(interval, max(1.0, interval / 4))


class SessionKeeper:
    """Heartbeats `session` until cancelled. `warn` gets one line per problem; `sleep` is injectable so the
    loop can be driven by a test clock."""

    def __init__(
        self,
        client: PlaytimeClient,
        session: PlaySession,
        *,
        warn: Callable[[str], None],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client, self.session, self._warn, self._sleep = client, session, warn, sleep
        self.sent = 0  # heartbeats the server accepted
        self.failed = 0

    async def run(self) -> None:
        delay = self.session.heartbeat_interval
        while True:
            await self._sleep(delay)
            delay = await self._beat()

    async def _beat(self) -> float:
        """One heartbeat; returns how long to wait before the next."""
        interval = self.session.heartbeat_interval
        try:
            await self._client.heartbeat(self.session)
        except grpc.aio.AioRpcError as exc:
            self.failed += 1
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                return await self._restart()
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                self._warn("heartbeat refused as too frequent; next one at the usual interval")
                return interval
            again = retry_delay(interval)
            self._warn(f"heartbeat failed ({code.name}: {exc.details()}); retrying in {again:g} s")
            return again
        self.sent += 1
        return interval

    async def _restart(self) -> float:
        """The server closed the session (silent too long, e.g. the machine slept): start a new one."""
        try:
            self.session = await self._client.start(self.session.product_id, self.session.device_id)
        except grpc.aio.AioRpcError as exc:
            self._warn(f"the session was closed by the server and could not be restarted ({exc.code().name})")
            return retry_delay(self.session.heartbeat_interval)
        self._warn("the server had closed the session (silent too long); playing on in a new session")
        return self.session.heartbeat_interval
