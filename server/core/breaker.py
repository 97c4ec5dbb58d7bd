"""A dependency that just failed is left alone for a moment (for callers that can do without it).

Where a capability has a fallback for Redis (the owner-count cache reads the database; a rate limit lets
the call through), a hung Redis would still cost every call the full wait before the fallback runs. After a
failure the breaker is open for `cooldown` seconds: callers go straight to their fallback, and the first
call after the cooldown tries the dependency again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from server.core.errors import dependency_unavailable


class Breaker:
    def __init__(self, cooldown: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self._cooldown = cooldown
        self._clock = clock
        self._open_until = 0.0

    @property
    def open(self) -> bool:
        """True while the dependency should not be tried."""
        return self._clock() < self._open_until

    def failed(self, error: BaseException) -> bool:
        """Records `error` if it is the dependency failing (then opens; True), else leaves it (False)."""
        if dependency_unavailable(error) is None:
            return False
        self._open_until = self._clock() + self._cooldown
        return True
