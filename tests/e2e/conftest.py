"""Fixtures for the REST tests through Envoy."""

from __future__ import annotations

import aiohttp
import pytest


@pytest.fixture
async def http(grpc_target):  # the server behind Envoy must be up
    async with aiohttp.ClientSession() as session:
        yield session
