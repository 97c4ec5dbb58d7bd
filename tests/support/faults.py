"""Dependency faults for tests: a dependency that hangs (SIGSTOP) or dies (killed), always restored.

    async with outage(broker, "hang"):   # SIGSTOP now, SIGCONT on the way out (even if the test fails)
        ...
    async with outage(redis_server, "kill"):   # killed now, restarted on the same port on the way out
        ...

Only dependencies a test owns (tests/support/processes.py: PrivateBroker, PrivateRedis, relay processes)
are stopped, so tests sharing the stack are never affected.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator
from typing import Literal, Protocol

How = Literal["hang", "kill"]
HOWS: tuple[How, ...] = ("hang", "kill")


class Restartable(Protocol):
    @property
    def pid(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@contextlib.contextmanager
def suspended(pid: int):
    """The process is stopped (SIGSTOP: it hangs, its sockets stay open) until the block ends."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.asynccontextmanager
async def outage(dependency: Restartable, how: How) -> AsyncIterator[None]:
    """The dependency hangs or is dead for the block; afterwards it is running again."""
    if how == "hang":
        with suspended(dependency.pid):
            yield
        return
    await dependency.stop()
    try:
        yield
    finally:
        await dependency.start()
