"""The outbox relay backs off while its database is unreachable (server/core/events/relay.py): commits keep
waking it, and its rebalance is overdue, yet it retries at the backoff's pace, not in a tight loop."""

from __future__ import annotations

import asyncio

from server.core import metrics
from server.core.events.relay import ChannelRelay, RelayOptions
from tests.support.processes import free_port


class NeverReached:
    async def send(self, rows):
        raise AssertionError("no row can be read without a database")

    def reset(self) -> None:
        pass


def failures(channel: str) -> float:
    return metrics.OUTBOX_RELAY_FAILURES.labels(channel)._value.get()


async def test_a_relay_whose_database_is_down_retries_at_the_backoffs_pace_however_often_it_is_woken():
    channel = "kafka"
    url = f"postgresql+psycopg://library@127.0.0.1:{free_port()}/library"  # nothing listens there
    options = RelayOptions(poll_seconds=0.05, rebalance_seconds=0.01)
    relay = ChannelRelay(channel, url, NeverReached(), options)
    before = failures(channel)
    task = asyncio.create_task(relay.run())
    for _ in range(150):  # 1.5 s of commits waking it every 10 ms
        relay.wake()
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    attempts = failures(channel) - before
    # backoff 0.1, 0.2, 0.4, 0.8 s: at most 5 attempts in 1.5 s (a tight loop made over a hundred)
    assert 1 <= attempts <= 5, attempts
