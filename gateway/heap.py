"""Keeps Python's cyclic garbage collector off the relay's long-lived objects.

Every open socket is about a hundred tracked objects that live as long as it does (10,000 sockets: about a
million). A full collection walks every object not frozen; measured with the loop probe (gateway.loop_probe)
at 10,000 sockets they took ~0.6 s of the loop each, several times a minute, even with everything frozen
every 10 s: what came since the last freeze (sockets opening, and each socket's keepalive objects, when
websockets ran one task per socket) was already a lot. So the relay freezes what is alive (gc.freeze:
moved out of the collector's sight) at start and then every FREEZE_SECONDS, after a collection of the
young generations only (bounded by the collector's thresholds, however large the heap), and turns the
automatic full collections off. A frozen object that later becomes cyclic garbage (a closed socket's
cycles, about a dozen small objects each) stays until the next thaw: every THAW_SECONDS everything is
unfrozen, collected once and frozen again (one pause of about a second at 10,000 sockets, once an hour).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

log = logging.getLogger(__name__)

FREEZE_SECONDS = 10.0
THAW_SECONDS = 3600.0
# gc's third threshold counts collections of the middle generation between two full ones: never reached
NO_AUTOMATIC_FULL_COLLECTIONS = 2**30


class HeapKeeper:
    def __init__(self, freeze_seconds: float = FREEZE_SECONDS, thaw_seconds: float = THAW_SECONDS):
        self._freeze_seconds = freeze_seconds
        self._thaw_seconds = thaw_seconds
        self._task: asyncio.Task | None = None
        self._thresholds = gc.get_threshold()

    def start(self) -> None:
        gc.collect()
        gc.freeze()  # what start built (modules, settings, pools) is never garbage
        self._thresholds = gc.get_threshold()
        # no automatic full collections: what is old is frozen every FREEZE_SECONDS, thawed hourly
        gc.set_threshold(self._thresholds[0], self._thresholds[1], NO_AUTOMATIC_FULL_COLLECTIONS)
        self._task = asyncio.create_task(self._run(), name="ws-heap-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        gc.set_threshold(*self._thresholds)

    async def _run(self) -> None:
        thawed_at = time.monotonic()
        while True:
            await asyncio.sleep(self._freeze_seconds)
            if time.monotonic() - thawed_at >= self._thaw_seconds:
                thawed_at = time.monotonic()
                gc.unfreeze()
                started = time.perf_counter()
                collected = gc.collect()
                gc.freeze()
                log.info(
                    "heap thawed and collected",
                    extra={"collected": collected, "ms": round((time.perf_counter() - started) * 1000)},
                )
            else:
                gc.collect(1)  # the young generations only: what is older is frozen, garbage or not
                gc.freeze()
