"""The dead-letter gauges (`outbox_dead_letters`, `consumer_dead_letters`), kept current in every process.

Every statement that adds or removes dead letters (the relay, a consumer, `scripts/dead-letters replay`,
whichever process runs it) sends NOTIFY `dead_letters` (a trigger, migration 0021); each process listens on
a connection of its own and recounts both tables when told, and every DEAD_LETTER_GAUGES_REFRESH_SECONDS
anyway (which also finds out a connection that died silently). A lost connection is made again a second
later; the gauges keep their last counts meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from server.core import metrics
from server.core.config import libpq_url
from server.core.db import DbTimeouts

log = logging.getLogger(__name__)

CHANNEL = "dead_letters"
_COUNTS = """
SELECT 'outbox', channel, count(*) FROM outbox_dead_letters GROUP BY channel
UNION ALL SELECT 'consumer', consumer, count(*) FROM consumer_dead_letters GROUP BY consumer
"""
_GAUGES = {"outbox": metrics.OUTBOX_DEAD_LETTERS, "consumer": metrics.CONSUMER_DEAD_LETTERS}


class DeadLetterGauges:
    def __init__(self, database_url: str, timeouts: DbTimeouts, *, refresh_seconds: float = 60.0):
        self._conninfo = libpq_url(database_url)
        self._timeouts = timeouts
        self._refresh_seconds = refresh_seconds

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("dead-letter gauges: lost the database; will retry", exc_info=True)
            await asyncio.sleep(1.0)

    async def _listen(self) -> None:
        conn = await self._timeouts.connection_class().connect(
            self._conninfo, autocommit=True, **self._timeouts.connect_kwargs()
        )
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
            while True:
                await self.recount(conn)
                async for _ in conn.notifies(timeout=self._refresh_seconds, stop_after=1):
                    pass
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    @staticmethod
    async def recount(conn: psycopg.AsyncConnection) -> None:
        """Sets both gauges from the tables (a label whose dead letters are all gone drops out)."""
        rows = await (await conn.execute(_COUNTS)).fetchall()
        for gauge in _GAUGES.values():
            gauge.clear()
        for kind, label, count in rows:
            _GAUGES[kind].labels(label).set(count)
