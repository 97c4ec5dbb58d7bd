"""Fixtures shared by the outbox, consumer and retention tests (made once per session: a scratch database
migrated to head, a broker and a Redis of their own cost seconds each)."""

from __future__ import annotations

import pytest

from server.core.config import Settings
from tests.support.outbox import outbox_world


@pytest.fixture(scope="session")
async def world(settings: Settings):
    """The private outbox world (tests/support/outbox.py); tests keep to users of their own."""
    async with outbox_world(settings) as world:
        yield world
