"""Keepalive pings (SPEC §8) for all of a relay's sockets from one timer.

websockets' own keepalive runs a task per connection that sleeps, pings, and waits for the pong under a
timeout: with 10,000 sockets, 10,000 sleeping tasks, 500 wake-ups a second with a timer and a timeout
each, and objects that live an interval each, long enough to reach the collector's oldest generation
(gateway.heap). Here one timer ticks TICK_SECONDS apart and pings one slice of the connections per tick, the
slices in turn, so each connection is pinged once per interval and a tick pings only a few dozen. A
connection whose previous ping is still unanswered when its turn comes again (one interval later: the
ping timeout websockets applied too) is closed (1011), and dropped at once: a peer that does not answer
pings will not answer a closing handshake either.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger(__name__)

TICK_SECONDS = 0.1


class Pingable(Protocol):
    def keepalive(self) -> None:
        """Closes the connection if its last keepalive ping got no pong; otherwise pings it."""


class Keepalive:
    def __init__(self, interval_seconds: float, tick_seconds: float = TICK_SECONDS):
        count = max(1, round(interval_seconds / tick_seconds))
        self._tick = interval_seconds / count
        self._slices: list[set[Pingable]] = [set() for _ in range(count)]
        self._slice_of: dict[Pingable, int] = {}
        self._next = 0  # the slice the next tick pings
        self._joined = 0
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._slice_of)

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(self._tick, self._fire)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def add(self, connection: Pingable) -> None:
        """Pinged from its slice's next turn on (the slices are filled in turn, so they stay even)."""
        index = self._joined % len(self._slices)
        self._joined += 1
        self._slices[index].add(connection)
        self._slice_of[connection] = index

    def discard(self, connection: Pingable) -> None:
        index = self._slice_of.pop(connection, None)
        if index is not None:
            self._slices[index].discard(connection)

    def _fire(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(self._tick, self._fire)
        due = self._slices[self._next]
        self._next = (self._next + 1) % len(self._slices)
        for connection in tuple(due):
            try:
                connection.keepalive()
            except Exception:  # one broken connection never stops the others' keepalive
                log.warning("keepalive ping failed", exc_info=True)
