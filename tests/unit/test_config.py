"""Settings refuse a configuration that would start and then misbehave (server/core/config.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from server.core.config import ConfigurationError, Settings


def test_a_lease_no_longer_than_the_send_timeout_is_refused(monkeypatch):
    monkeypatch.setenv("OUTBOX_LEASE_SECONDS", "10")
    monkeypatch.setenv("OUTBOX_SEND_TIMEOUT_SECONDS", "10")
    with pytest.raises(ConfigurationError, match=r"OUTBOX_LEASE_SECONDS \(10\) must be greater than "):
        Settings.from_env()
    monkeypatch.setenv("OUTBOX_LEASE_SECONDS", "10.5")
    assert Settings.from_env().outbox_lease_seconds == 10.5


def test_a_lease_no_longer_than_the_rebalance_period_is_refused():
    with pytest.raises(ConfigurationError, match=r"OUTBOX_REBALANCE_SECONDS \(20\)"):
        Settings(outbox_lease_seconds=15, outbox_rebalance_seconds=20)


def test_the_server_refuses_to_start_with_it_and_says_why():
    env = {**os.environ, "OUTBOX_LEASE_SECONDS": "5", "OUTBOX_SEND_TIMEOUT_SECONDS": "10"}
    done = subprocess.run(
        [sys.executable, "-m", "server"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "server: configuration error: OUTBOX_LEASE_SECONDS (5) must be greater than " in done.stderr
    assert "Traceback" not in done.stderr
