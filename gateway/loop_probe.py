"""How long the relay's event loop was held, and how much of that the garbage collector took.

A timer is due every TICK_SECONDS; how late it runs is the loop's lag (`ws_loop_lag_seconds`): a callback
holding the loop, or a machine that gave the process no CPU. The two are told apart by the process CPU used
in the late interval: a lag over STALL_SECONDS is a stall, its CPU is added to
`ws_loop_stall_cpu_seconds_total` (near the stall's length: the relay's own work held the loop; far below
it: the process was waiting for a core) and logged with the garbage collector's share of it. Every
collection is observed in `ws_gc_pause_seconds` by generation. The probe costs one timer callback per tick.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from server.core import metrics

log = logging.getLogger(__name__)

TICK_SECONDS = 0.01
STALL_SECONDS = 0.05


class LoopProbe:
    def __init__(self, tick_seconds: float = TICK_SECONDS, stall_seconds: float = STALL_SECONDS):
        self._tick = tick_seconds
        self._stall = stall_seconds
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._cpu = 0.0
        self._gc_started = 0.0
        self._gc_seconds = 0.0  # collections since the last tick
        self._pauses = [metrics.WS_GC_PAUSES.labels(str(generation)) for generation in range(3)]

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._schedule(asyncio.get_running_loop())

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = loop.time() + self._tick
        self._cpu = time.process_time()
        self._gc_seconds = 0.0
        self._handle = loop.call_at(self._due, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        lag = max(0.0, loop.time() - self._due)
        metrics.WS_LOOP_LAG.observe(lag)
        if lag >= self._stall:
            cpu = time.process_time() - self._cpu
            metrics.WS_LOOP_STALL_CPU.inc(cpu)
            log.info(
                "event loop stalled",
                extra={
                    "lag_ms": round(lag * 1000, 1),
                    "cpu_ms": round(cpu * 1000, 1),
                    "gc_ms": round(self._gc_seconds * 1000, 1),
                },
            )
        self._schedule(loop)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        pause = time.perf_counter() - self._gc_started
        self._gc_seconds += pause
        self._pauses[info["generation"]].observe(pause)
