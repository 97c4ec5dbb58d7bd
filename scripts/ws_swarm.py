"""Many WebSocket clients in one process, cheaply: for the relay's scale test and its benchmark.

Each socket is a bare asyncio Protocol driving websockets' sans-I/O ClientProtocol (a few KiB per socket
instead of a full client connection with its tasks), so one process opens 10,000 sockets in seconds. A
socket answers WebSocket pings by itself (the relay's keepalive) and hands every text frame to a callback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterable

import uvloop
from redis.asyncio import Redis
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from scripts.devtokens import mint
from server.core.config import Settings
from server.core.uow import notification_stream


class HandshakeFailed(Exception):
    def __init__(self, status: int | None, detail: str):
        super().__init__(f"handshake failed ({status}): {detail}")
        self.status = status


class SwarmSocket(asyncio.Protocol):
    __slots__ = ("_request", "closed", "on_text", "opened", "protocol", "transport")

    def __init__(self, url: str, on_text: Callable[[str], None] | None):
        self.protocol = ClientProtocol(parse_uri(url), max_size=1 << 20)
        self._request = self.protocol.connect()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.on_text = on_text

    @property
    def close_code(self) -> int | None:
        return self.closed.result() if self.closed.done() else None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.protocol.send_request(self._request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if self.protocol.state is State.OPEN:
                    self.opened.set_result(None)
                else:
                    self._fail_open(event.status_code, event.body.decode(errors="replace").strip())
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT and self.on_text is not None:
                self.on_text(event.data.decode())
        self._flush()

    def eof_received(self) -> bool:
        self.protocol.receive_eof()
        self._flush()
        return False

    def connection_lost(self, exc) -> None:
        self._fail_open(None, f"connection lost: {exc}")
        if not self.closed.done():
            close = self.protocol.close_rcvd
            self.closed.set_result(close.code if close is not None else None)

    def _fail_open(self, status: int | None, detail: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(HandshakeFailed(status, detail))
            self.opened.exception()  # retrieved: a failed socket is reported through open_all

    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self._flush()

    def abort(self) -> None:
        """Drops the TCP connection at once (RST), as a crashed client or a lost network does."""
        if self.transport is not None:
            self.transport.abort()


async def open_socket(
    host: str,
    port: int,
    path: str,
    token: str,
    on_text: Callable[[str], None] | None = None,
    timeout: float = 60.0,
) -> SwarmSocket:
    url = f"ws://{host}:{port}{path}?token={token}"
    loop = asyncio.get_running_loop()
    _, socket = await loop.create_connection(lambda: SwarmSocket(url, on_text), host, port)
    try:
        await asyncio.wait_for(asyncio.shield(socket.opened), timeout)
    except TimeoutError:
        socket.abort()
        raise HandshakeFailed(None, f"no handshake response within {timeout} s") from None
    return socket


async def open_all(
    targets: Iterable[tuple[int, str]],
    *,
    host: str = "127.0.0.1",
    path: str = "/api/v1/ws/library",
    concurrency: int = 50,
    on_text: Callable[[int], Callable[[str], None]] | None = None,
) -> list[SwarmSocket]:
    """Opens one socket per (port, token), at most `concurrency` handshakes at a time; raises the first
    failure (after aborting what opened)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, port: int, token: str) -> SwarmSocket:
        async with gate:
            return await open_socket(host, port, path, token, on_text(index) if on_text else None)

    tasks = [asyncio.create_task(one(i, port, token)) for i, (port, token) in enumerate(targets)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is not None:
        for result in results:
            if isinstance(result, SwarmSocket):
                result.abort()
        raise failure
    return results  # type: ignore[return-value]


# ---- `python -m scripts.ws_swarm`: the swarm as a process of its own (the WebSocket bench) ---------------
#
# Opens one socket per user of --users (a file of user ids, one a line; tokens minted here), spread over
# --ports, and prints one JSON line `{"event": "open", ...}`. Every text frame's latency is its receive time
# (time.time()) minus the `t` its payload carries (the publisher's time.time() at XADD: one clock, this
# machine's). Then it answers commands read from stdin, one JSON line each on stdout:
#   collect N TIMEOUT        the frames received since the last collect, once N arrived (or at TIMEOUT s)
#   baseline USER N TIMEOUT  a bare XREAD BLOCK loop on USER's stream, from the start, until N entries
#   abort                    every socket dropped at once (RST); exits


async def _serve(tokens: list[str], ports: list[int], path: str) -> None:
    def say(**fields) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    frames: list[tuple[float, float]] = []  # (sent at, latency) per frame received
    arrived = asyncio.Event()
    wanted = 0

    def on_text(_index: int) -> Callable[[str], None]:
        def received(text: str) -> None:
            now = time.time()
            sent = json.loads(text)["payload"]["t"]
            frames.append((sent, now - sent))
            if len(frames) >= wanted:
                arrived.set()

        return received

    started = time.perf_counter()
    sockets = await open_all(
        [(ports[i % len(ports)], token) for i, token in enumerate(tokens)], path=path, on_text=on_text
    )
    say(event="open", sockets=len(sockets), open_seconds=round(time.perf_counter() - started, 2))

    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    redis = Redis.from_url(Settings.from_env().redis_url)
    try:
        while line := (await reader.readline()).decode().split():
            command, args = line[0], line[1:]
            if command == "collect":
                wanted, timeout = int(args[0]), float(args[1])
                if len(frames) < wanted:
                    arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(arrived.wait(), timeout)
                got, frames[:] = list(frames), []
                say(event="collected", frames=got)
            elif command == "baseline":
                stream, n, timeout = notification_stream(args[0]), int(args[1]), float(args[2])
                got, cursor, deadline = [], "0-0", loop.time() + timeout
                while len(got) < n and loop.time() < deadline:
                    for _, entries in await redis.xread({stream: cursor}, block=1000, count=100):
                        for entry_id, fields in entries:
                            now = time.time()
                            cursor, sent = entry_id, json.loads(fields[b"payload"])["t"]
                            got.append((sent, now - sent))
                say(event="baseline", frames=got)
            elif command == "abort":
                for socket in sockets:
                    socket.abort()
                say(event="aborted")
                return
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", required=True, help="file of user ids, one a line (one socket each)")
    parser.add_argument("--ports", required=True, help="comma-separated edge ports, used in turn")
    parser.add_argument("--path", default="/api/v1/ws/library")
    args = parser.parse_args()
    with open(args.users) as f:
        tokens = [mint(line.strip()) for line in f if line.strip()]
    uvloop.run(_serve(tokens, [int(p) for p in args.ports.split(",")], args.path))


if __name__ == "__main__":
    main()
