"""The cluster rule (docs/ARCHITECTURE.md): the keys of one Lua script call or one MULTI/EXEC share a
Redis Cluster hash slot. Redis itself refuses a cross-slot script on a cluster (CROSSSLOT), but only on
the paths a test happens to run; this pins every script of the code base and the keys its callers pass."""

from __future__ import annotations

import importlib
import pkgutil
import re
import uuid

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

import gateway
import server
from gateway import streams
from server.core.events import senders
from server.core.rate_limit import bucket_key
from server.core.uow import notification_stream
from server.downloads import progress

KEYS = re.compile(r"KEYS\[(\d+)\]")


def _slot(key: str) -> int:
    return key_slot(key.encode())


def _scripts() -> dict[str, int]:
    """Every Lua script held in a module-level string of server/ and gateway/, with the number of keys it
    reads (its highest KEYS index)."""
    found = {}
    for package in (server, gateway):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if isinstance(value, str) and "redis.call(" in value:
                    found[f"{info.name}.{name}"] = max((int(n) for n in KEYS.findall(value)), default=0)
    return found


def test_the_only_multi_key_scripts_are_the_ones_whose_keys_are_checked_below():
    scripts = _scripts()
    assert len(scripts) >= 8, scripts  # the heartbeat, claims, limits, slots, progress, notifications...
    multi_key = {name for name, keys in scripts.items() if keys > 1}
    # A new script with several keys belongs here, with a test that its callers' keys share a slot.
    assert multi_key == {
        "server.downloads.progress._REPORT",
        "server.core.events.senders._XADD_ONCE",
        "gateway.streams._OPEN",
    }


@given(st.uuids(), st.uuids())
def test_a_progress_report_touches_the_session_the_users_stream_and_rate_limit_in_one_slot(
    user_id, download_id
):
    keys = [
        progress._key(user_id, download_id),
        notification_stream(user_id),
        bucket_key(progress.REPORT_METHOD, str(user_id)),
    ]
    assert len({_slot(key) for key in keys}) == 1


@given(st.uuids(), st.uuids())
def test_a_progress_transaction_keeps_to_one_slot(user_id, download_id):
    """LiveProgress.put deletes the session hash with its file set in one MULTI/EXEC."""
    keys = [progress._key(user_id, download_id), progress.files_key(user_id, download_id)]
    assert len({_slot(key) for key in keys}) == 1


@given(st.uuids())
def test_a_handshake_takes_the_users_slot_and_reads_their_stream_in_one_slot(user_id):
    assert len({_slot(key) for key in streams.open_keys(str(user_id))}) == 1


@given(st.uuids(), st.uuids())
def test_a_notification_and_its_sent_marker_share_the_streams_slot(user_id, row_id):
    stream = notification_stream(user_id)
    assert _slot(senders.sent_marker(stream, str(row_id))) == _slot(stream)


def test_users_streams_spread_over_the_slots():
    """The hash tag is the user id, not a constant: streams spread over every master."""
    slots = {_slot(notification_stream(uuid.uuid4())) for _ in range(200)}
    assert len(slots) > 150
