"""The bandwidth cap and the parallelism limit of running downloads, both changeable while they run.

TokenBucket is pure (an injectable clock): bytes are charged after they were actually read from the network,
the balance may go negative (debt), and a reader waits until the debt is paid at the current rate, so over
any window the bytes read are at most `rate * window + burst` plus one read block per stream. The bucket
starts empty, so a download's measured rate never exceeds the cap by the burst either.

Throttle wraps it for asyncio: a rate change wakes every waiting reader, which re-times what it still owes at
the new rate (a lower cap applies at once; a raised or removed one releases readers at once). Gate is a
semaphore whose size can change and which can be closed (a paused download).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

KBPS = 1000 / 8  # bytes per second in one kilobit per second (the settings' unit)
BURST_SECONDS = 0.1
MIN_BURST = 16 * 1024


def bytes_per_second(kbps: int) -> float:
    """The settings' `bandwidth_limit_kbps` as bytes per second; 0 means no limit."""
    return max(0, kbps) * KBPS


class TokenBucket:
    def __init__(self, rate: float = 0.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rate = 0.0
        self._tokens = 0.0
        self._at = clock()
        self.set_rate(rate)

    @property
    def rate(self) -> float:
        """Bytes per second; 0 = unlimited."""
        return self._rate

    @property
    def capacity(self) -> float:
        return max(MIN_BURST, self._rate * BURST_SECONDS)

    def _refill(self) -> None:
        now = self._clock()
        if self._rate:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now

    def set_rate(self, rate: float) -> None:
        """A new cap from now on; what is owed stays owed (in bytes) and is paid at the new rate."""
        self._refill()
        self._rate = max(0.0, rate)
        self._tokens = min(self._tokens, self.capacity) if self._rate else 0.0

    def charge(self, n: int) -> float:
        """Charges `n` bytes just read; returns the seconds to wait before reading more (0 = go on)."""
        if not self._rate:
            return 0.0
        self._refill()
        self._tokens -= n
        return -self._tokens / self._rate if self._tokens < 0 else 0.0


class Throttle:
    """The asyncio side of a TokenBucket shared by every stream of a download."""

    def __init__(self, bucket: TokenBucket | None = None) -> None:
        self.bucket = bucket or TokenBucket()
        self._changed = asyncio.Event()

    def set_rate(self, rate: float) -> None:
        if rate == self.bucket.rate:
            return
        self.bucket.set_rate(rate)
        self._changed.set()  # every waiter re-times itself
        self._changed = asyncio.Event()

    async def consume(self, n: int) -> None:
        wait = self.bucket.charge(n)
        while wait > 0:
            rate, changed = self.bucket.rate, self._changed
            started = time.monotonic()
            try:
                await asyncio.wait_for(changed.wait(), wait)
            except TimeoutError:
                return
            left = wait - (time.monotonic() - started)
            new_rate = self.bucket.rate
            wait = left * rate / new_rate if new_rate and left > 0 else 0.0


class Gate:
    """At most `limit` holders at once; a closed gate admits nobody (holders inside finish)."""

    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)
        self._inside = 0
        self._open = True
        self._condition = asyncio.Condition()

    @property
    def limit(self) -> int:
        return self._limit

    async def __aenter__(self) -> None:
        async with self._condition:
            await self._condition.wait_for(lambda: self._open and self._inside < self._limit)
            self._inside += 1

    async def __aexit__(self, *exc) -> None:
        async with self._condition:
            self._inside -= 1
            self._condition.notify_all()

    async def set_limit(self, limit: int) -> None:
        async with self._condition:
            self._limit = max(1, limit)
            self._condition.notify_all()

    async def set_open(self, is_open: bool) -> None:
        async with self._condition:
            self._open = is_open
            self._condition.notify_all()
