"""The heartbeat's accrual rule exists twice: in Lua inside Redis (server/playtime/live.py, what every
heartbeat runs) and in Python (server/playtime/rules.advance, what End and the docs rely on). Hypothesis
drives both with the same heartbeats (in order, repeated, out of order, gaps below, at and above the
credited limit) against the stack's Redis, and the states must be equal."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.config import Settings
from server.core.redis import redis_from_settings
from server.playtime.live import LiveRecord, LiveSessions
from server.playtime.rules import AccrualPolicy, LiveSession, advance

POLICY = AccrualPolicy(heartbeat_interval=timedelta(seconds=60))
START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LIMIT_MS = 120_000  # the longest credited gap
# steps between heartbeats, in ms: small, around the limit (exactly at it too), long, backwards, repeats
_steps = st.one_of(
    st.integers(min_value=0, max_value=LIMIT_MS),
    st.integers(min_value=LIMIT_MS - 2, max_value=LIMIT_MS + 2),
    st.integers(min_value=LIMIT_MS, max_value=10 * LIMIT_MS),
    st.integers(min_value=-LIMIT_MS, max_value=0),
)


@pytest.fixture(scope="module")
def run():
    """One event loop and one store for every example (hypothesis calls the test many times)."""
    loop = asyncio.new_event_loop()
    redis = redis_from_settings(Settings.from_env(), timeout=5.0)
    live = LiveSessions(redis, POLICY, timedelta(minutes=5))
    yield lambda steps: loop.run_until_complete(_both(live, steps))
    loop.run_until_complete(redis.aclose())
    loop.close()


async def _both(live: LiveSessions, steps: list[int]) -> tuple[LiveSession, LiveSession]:
    session_id, user_id, product_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    expected = LiveSession.started(START)
    try:
        await live.open(session_id, LiveRecord(user_id, product_id, "pc", expected))
        now = START
        for step in steps:
            now += timedelta(milliseconds=step)
            await live.heartbeat(session_id, user_id, product_id, now, limited=False)
            expected = advance(expected, now, POLICY)
        record = await live.get(session_id)
        assert record is not None
        return record.state, expected
    finally:
        await live.delete(session_id)


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(_steps, max_size=25))
def test_the_lua_heartbeat_and_rules_advance_agree(run, steps):
    in_redis, in_python = run(steps)
    assert in_redis == in_python
