"""Pure download-session rules: the state machine, the queue (priority, age, slots, schedule window), and
smoothed speed / ETA / notification rate, with time under control."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.downloads import session_rules as rules
from server.downloads.session_rules import Action, QueueEntry

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ALL_ACTIONS = list(Action)

# (status, action) → status after, for every allowed pair; every other pair is refused.
ALLOWED = {
    (rules.QUEUED, Action.PAUSE): rules.PAUSED,
    (rules.DOWNLOADING, Action.PAUSE): rules.PAUSED,
    (rules.PAUSED, Action.RESUME): rules.QUEUED,
    (rules.FAILED, Action.RESUME): rules.QUEUED,
    (rules.DOWNLOADING, Action.COMPLETE): rules.COMPLETED,
    (rules.DOWNLOADING, Action.FAIL): rules.FAILED,
    **{(s, Action.CANCEL): rules.CANCELLED for s in rules.ACTIVE},
    **{(s, Action.REPRIORITIZE): s for s in rules.ACTIVE},
}


@pytest.mark.parametrize("status", rules.STATUSES)
@pytest.mark.parametrize("action", ALL_ACTIONS)
def test_the_state_machine_allows_exactly_the_contracts_transitions(status, action):
    if (status, action) in ALLOWED:
        assert rules.transition(status, action) == ALLOWED[(status, action)]
    else:
        with pytest.raises(rules.FailedPrecondition) as raised:
            rules.transition(status, action)
        assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert raised.value.reason == "INVALID_STATE_TRANSITION"
        assert raised.value.metadata == {"status": status, "action": action.value}


def test_terminal_sessions_accept_nothing():
    for status in rules.TERMINAL:
        assert not [a for a in ALL_ACTIONS if (status, a) in ALLOWED]


def entry(n: int, status=rules.QUEUED, priority=0, age_s=0, start_now=False) -> QueueEntry:
    return QueueEntry(uuid.UUID(int=n), status, priority, T0 + timedelta(seconds=age_s), start_now)


def test_free_slots_go_to_the_highest_priority_then_the_oldest():
    entries = [
        entry(1, priority=10, age_s=5),
        entry(2, priority=50, age_s=9),
        entry(3, priority=10, age_s=1),
        entry(4, status=rules.DOWNLOADING),
        entry(5, status=rules.PAUSED, priority=100),
    ]
    assert rules.to_promote(entries, max_concurrent=3, in_window=True) == [uuid.UUID(int=2), uuid.UUID(int=3)]
    assert rules.to_promote(entries, max_concurrent=1, in_window=True) == []


def test_outside_the_schedule_window_only_start_now_sessions_start():
    entries = [entry(1, priority=90), entry(2, start_now=True, age_s=3)]
    assert rules.to_promote(entries, max_concurrent=2, in_window=False) == [uuid.UUID(int=2)]
    assert rules.to_promote(entries, max_concurrent=2, in_window=True) == [uuid.UUID(int=1), uuid.UUID(int=2)]


_entries = st.lists(
    st.builds(
        entry,
        st.integers(1, 10_000),
        st.sampled_from(rules.STATUSES),
        st.integers(0, 100),
        st.integers(0, 50),
        st.booleans(),
    ),
    max_size=30,
    unique_by=lambda e: e.session_id,
)


@given(_entries, st.integers(1, 10), st.booleans())
def test_promotion_never_exceeds_the_limit_and_never_skips_a_better_waiting_session(
    entries, limit, in_window
):
    promoted = rules.to_promote(entries, max_concurrent=limit, in_window=in_window)
    downloading = sum(1 for e in entries if e.status == rules.DOWNLOADING)
    assert downloading + len(promoted) <= max(limit, downloading)
    eligible = sorted(
        (e for e in entries if e.status == rules.QUEUED and (in_window or e.start_now)), key=rules.queue_order
    )
    # exactly the best eligible ones, as many as fit
    assert promoted == [e.session_id for e in eligible[: max(0, limit - downloading)]]


def test_speed_is_unknown_until_two_reports_then_smoothed_over_time():
    first = rules.smooth(None, 0, 0)
    assert first.speed == 0 and rules.eta_seconds(0, 1000, first.speed) is None
    second = rules.smooth(first, 1000, 1_000_000)  # 1 MB in 1 s
    assert second.speed == pytest.approx(1_000_000)
    # a burst 100 ms later at 10 MB/s moves the average far less than a full time constant would
    burst = rules.smooth(second, 1100, 2_000_000)
    assert 1_000_000 < burst.speed < 2_000_000
    long = rules.smooth(second, 6000, 51_000_000)  # 10 MB/s sustained over 5 s
    assert long.speed > burst.speed


def test_a_report_going_backwards_or_at_the_same_instant_keeps_the_speed_and_moves_the_base():
    sample = rules.SpeedSample(1000, 5_000, 2_000.0)
    back = rules.smooth(sample, 2000, 4_000)
    assert back == rules.SpeedSample(2000, 4_000, 2_000.0)
    same = rules.smooth(sample, 1000, 6_000)
    assert same == rules.SpeedSample(1000, 6_000, 2_000.0)


def test_eta_rounds_up_and_percentage_stays_within_bounds():
    assert rules.eta_seconds(0, 1001, 100.0) == 11
    assert rules.eta_seconds(1001, 1001, 100.0) == 0
    assert rules.progress_percentage(50, 200) == 25.0
    assert rules.progress_percentage(0, 0) == 100.0
    assert rules.progress_percentage(300, 200) == 100.0


def test_progress_notifications_are_due_at_most_once_a_second():
    assert rules.notify_due(None, 5_000)
    assert not rules.notify_due(5_000, 5_999)
    assert rules.notify_due(5_000, 6_000)


def test_status_changed_payload_has_the_seed_shape():
    payload = rules.status_changed_payload(
        download_id=uuid.UUID(int=1),
        user_id=uuid.UUID(int=2),
        product_id=uuid.UUID(int=3),
        version_id=uuid.UUID(int=4),
        new_status=rules.DOWNLOADING,
        previous_status=rules.QUEUED,
        downloaded_bytes=10,
        total_size_bytes=20,
        when="2026-12-01T09:00:00Z",
    )
    assert payload == {
        "downloadSessionId": str(uuid.UUID(int=1)),
        "userId": str(uuid.UUID(int=2)),
        "productId": str(uuid.UUID(int=3)),
        "versionId": str(uuid.UUID(int=4)),
        "newStatus": "downloading",
        "previousStatus": "queued",
        "downloadedBytes": 10,
        "totalSizeBytes": 20,
        "timestamp": "2026-12-01T09:00:00Z",
        "errorDetails": None,
    }
