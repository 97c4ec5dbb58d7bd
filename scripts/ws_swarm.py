"""Many WebSocket clients in one process, cheaply: for the relay's scale test and its benchmark.

Each socket is a bare asyncio Protocol driving websockets' sans-I/O ClientProtocol (a few KiB per socket
instead of a full client connection with its tasks), so one process opens 10,000 sockets in seconds. A
socket answers WebSocket pings by itself (the relay's keepalive) and hands every text frame to a callback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri


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
