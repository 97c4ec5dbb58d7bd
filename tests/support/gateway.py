"""The WebSocket relay for tests: one started in-process, the one Envoy routes to, and a relay process of
a test's own (`python -m gateway`, as production runs it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from gateway.app import Gateway
from server.core.auth import TokenVerifier
from server.core.config import Settings
from tests.support.processes import ROOT, free_port, wait_for_port


async def start_gateway(settings: Settings, redis, port: int | None = None) -> Gateway:
    gateway = Gateway(settings, TokenVerifier.from_settings(settings), redis)
    await gateway.start(host="127.0.0.1", port=free_port() if port is None else port)
    return gateway


@pytest.fixture(scope="module")
async def gateway_on_ws_port(settings: Settings, redis):
    """The gateway Envoy routes to (127.0.0.1:$WS_PORT): started here unless one listens already."""
    port = settings.ws_port
    with socket.socket() as probe:
        in_use = probe.connect_ex(("127.0.0.1", port)) == 0
    if in_use:
        yield None
        return
    gw = await start_gateway(settings, redis, port=port)
    yield gw
    await gw.stop(grace=5)


@dataclass
class RelayProcess:
    port: int
    metrics_port: int
    pid: int

    async def open_connections(self) -> int:
        """The process's own count of open connections (its ws_connections gauge)."""
        async with httpx.AsyncClient(timeout=60) as http:  # its metrics thread waits while it is busy
            text = (await http.get(f"http://127.0.0.1:{self.metrics_port}/metrics")).text
        match = re.search(r"^ws_connections (\S+)$", text, re.MULTILINE)
        assert match, "ws_connections missing from the relay's metrics"
        return int(float(match.group(1)))

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            kib = next(line.split()[1] for line in status if line.startswith("VmRSS:"))
        return int(kib) * 1024


@contextlib.asynccontextmanager
async def relay_process(**env: str) -> AsyncIterator[RelayProcess]:
    """`python -m gateway` on free ports with `env` on top of this process's environment; SIGTERM after
    (its output goes to .local/test-relay.log)."""
    port, metrics_port = free_port(), free_port()
    overrides = {"WS_PORT": str(port), "WS_METRICS_PORT": str(metrics_port), "LOG_LEVEL": "WARNING", **env}
    log = os.open(ROOT / ".local" / "test-relay.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", cwd=ROOT, env={**os.environ, **overrides}, stdout=log, stderr=log
        )
    finally:
        os.close(log)
    try:
        await wait_for_port(port)
        yield RelayProcess(port, metrics_port, proc.pid)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
