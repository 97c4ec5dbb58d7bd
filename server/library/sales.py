"""The wishlist sale fan-out worker (SPEC §6): announces each recorded sale to every user wishing for the
product, `library_sale_batch_size` wishers per transaction (use_cases.fan_out_sale_batch), so a sale to
100,000 wishers is 200 short transactions of 500 outbox rows, never one giant one. Several server
processes may run it: a sale is held under its row lock (SKIP LOCKED) for one batch at a time."""

from __future__ import annotations

import asyncio
import logging

from server.core.deps import Deps
from server.library import use_cases

log = logging.getLogger(__name__)


async def run_sale_fanout(deps: Deps) -> None:
    """Works through pending sales batch after batch; polls every `library_sale_poll_seconds` when idle."""
    settings = deps.settings
    while True:
        try:
            while await use_cases.fan_out_sale_batch(deps, settings.library_sale_batch_size):
                pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("wishlist sale fan-out failed; retrying", exc_info=True)
        await asyncio.sleep(settings.library_sale_poll_seconds)
