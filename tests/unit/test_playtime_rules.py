"""Playtime arithmetic with the clock under control: accrual, gaps, union, the two-week window, offline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.validation import CLOCK_SKEW
from server.playtime.rules import (
    TWO_WEEKS,
    AccrualPolicy,
    DeviceInterval,
    Interval,
    LiveSession,
    OfflineBounds,
    OfflineRejection,
    StoredTotals,
    added,
    advance,
    clip,
    creditable,
    is_silent,
    microseconds,
    offline_rejection,
    product_stats,
    seconds,
    stats_from_totals,
    union,
    until,
)

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
POLICY = AccrualPolicy(heartbeat_interval=timedelta(seconds=60))


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def play(*heartbeats: float) -> LiveSession:
    """A session started at the first time, then heartbeating at the others."""
    state = LiveSession.started(at(heartbeats[0]))
    for h in heartbeats[1:]:
        state = advance(state, at(h), POLICY)
    return state


def test_regular_heartbeats_credit_the_whole_session():
    state = play(0, 60, 120, 180)
    assert state.credited() == timedelta(seconds=180)
    assert state.segments() == [Interval(at(0), at(180))]


def test_a_gap_of_exactly_twice_the_interval_is_credited():
    assert play(0, 120).credited() == timedelta(seconds=120)


def test_a_gap_longer_than_twice_the_interval_is_not_credited_at_all():
    state = play(0, 60, 60 + 121, 60 + 121 + 60)
    assert state.credited() == timedelta(seconds=120)
    assert state.segments() == [Interval(at(0), at(60)), Interval(at(181), at(241))]


def test_start_then_long_silence_then_end_credits_nothing():
    assert play(0, 3600).credited() == timedelta(0)


def test_an_out_of_order_heartbeat_changes_nothing():
    state = play(0, 60)
    assert advance(state, at(30), POLICY) == state


def test_a_session_is_silent_only_after_three_intervals():
    state = play(0, 60)
    assert not is_silent(state.last_heartbeat, at(60 + 180), POLICY)
    assert is_silent(state.last_heartbeat, at(60 + 181), POLICY)


def test_union_merges_overlapping_and_touching_intervals_and_drops_empty_ones():
    merged = union(
        [
            Interval(at(50), at(100)),
            Interval(at(0), at(60)),
            Interval(at(100), at(110)),
            Interval(at(200), at(200)),
            Interval(at(300), at(310)),
        ]
    )
    assert merged == [Interval(at(0), at(110)), Interval(at(300), at(310))]


def test_two_devices_playing_at_once_count_once():
    played = [
        DeviceInterval("pc", Interval(at(0), at(3600))),
        DeviceInterval("deck", Interval(at(1800), at(5400))),
    ]
    stats = product_stats(played, at(6000), last_two_weeks=False)
    assert stats.total_seconds == 5400
    assert stats.device_seconds == [("deck", 3600), ("pc", 3600)]
    assert stats.last_played_at == at(5400)


def test_two_week_window_is_exact_and_splits_a_session_at_its_edge():
    now = at(0) + timedelta(days=20)
    edge = now - timedelta(days=14)
    played = [
        DeviceInterval("pc", Interval(edge - timedelta(minutes=30), edge + timedelta(minutes=45))),
        DeviceInterval("pc", Interval(edge - timedelta(hours=5), edge - timedelta(hours=4))),
        DeviceInterval("deck", Interval(now - timedelta(minutes=10), now)),
    ]
    stats = product_stats(played, now, last_two_weeks=True)
    assert stats.last_two_weeks_seconds == 45 * 60 + 10 * 60
    assert stats.total_seconds == 75 * 60 + 3600 + 10 * 60
    assert stats.device_seconds == [("pc", 45 * 60), ("deck", 10 * 60)]
    assert stats.period_seconds(True) == stats.last_two_weeks_seconds
    assert stats.period_seconds(False) == stats.total_seconds


def test_devices_without_time_in_the_period_are_left_out():
    now = at(0) + timedelta(days=30)
    played = [
        DeviceInterval("old", Interval(at(0), at(60))),
        DeviceInterval("new", Interval(now - timedelta(seconds=5), now)),
    ]
    assert product_stats(played, now, last_two_weeks=True).device_seconds == [("new", 5)]


def test_never_played_product_has_zero_stats():
    stats = product_stats([], at(0), last_two_weeks=False)
    assert (
        stats.total_seconds,
        stats.last_two_weeks_seconds,
        stats.last_played_at,
        stats.device_seconds,
    ) == (0, 0, None, [])


def test_overlapping_intervals_count_once_and_clipping_keeps_only_the_part_in_the_window():
    intervals = [Interval(at(0), at(100)), Interval(at(50), at(150))]
    assert seconds(intervals) == 150
    assert clip(intervals, at(120), at(200)) == [Interval(at(120), at(150))]


def test_offline_session_is_rejected_when_empty_reversed_in_the_future_or_over_a_day_long():
    now = at(100_000)
    bounds = OfflineBounds(now, CLOCK_SKEW, oldest=at(0))

    def rejection(start, end):
        return offline_rejection(Interval(start, end), bounds, at(0))

    assert rejection(at(0), at(3600)) is None
    assert rejection(at(10), at(10)) is OfflineRejection.INVALID_INTERVAL
    assert rejection(at(20), at(10)) is OfflineRejection.INVALID_INTERVAL
    assert rejection(at(99_000), now + CLOCK_SKEW + timedelta(seconds=1)) is OfflineRejection.IN_FUTURE
    assert rejection(at(0), at(24 * 3600 + 1)) is OfflineRejection.TOO_LONG
    assert rejection(at(0), at(24 * 3600)) is None


def test_offline_session_is_bounded_by_the_age_limit_and_the_acquisition():
    now = at(100_000)
    bounds = OfflineBounds(now, CLOCK_SKEW, oldest=at(1000))
    R = OfflineRejection
    assert offline_rejection(Interval(at(999), at(2000)), bounds, at(0)) is R.TOO_OLD
    assert offline_rejection(Interval(at(1000), at(2000)), bounds, at(0)) is None
    assert offline_rejection(Interval(at(4999), at(6000)), bounds, at(5000)) is R.BEFORE_ACQUISITION
    assert offline_rejection(Interval(at(5000), at(6000)), bounds, at(5000)) is None
    assert offline_rejection(Interval(at(5000), at(6000)), bounds, None) is R.PRODUCT_NOT_OWNED


def test_play_after_a_revocation_is_not_credited():
    segments = [Interval(at(0), at(100)), Interval(at(150), at(300)), Interval(at(400), at(500))]
    assert until(segments, at(200)) == [Interval(at(0), at(100)), Interval(at(150), at(200))]
    assert until(segments, None) == segments
    assert until(segments, at(0)) == []


def test_an_offline_session_within_clock_skew_credits_nothing_after_now():
    now = at(1000)
    assert creditable(Interval(at(900), at(1060)), now) == Interval(at(900), at(1000))
    assert creditable(Interval(at(1010), at(1060)), now).length == timedelta(0)


# Stored totals (what checkpoints keep) against the definition (every interval at once).
_moments = st.integers(min_value=0, max_value=40 * 24 * 3600)
_played = st.builds(
    lambda device, start, length: DeviceInterval(device, Interval(at(start), at(start + length))),
    st.sampled_from(["pc", "deck", "phone"]),
    _moments,
    st.integers(min_value=1, max_value=6 * 3600),
)


def _stored(played: list[DeviceInterval]) -> StoredTotals:
    """Totals grown one interval at a time, as crediting does."""
    total, devices, seen = 0, {}, []
    for p in played:
        total += microseconds(added([s.interval for s in seen], p.interval))
        mine = [s.interval for s in seen if s.device_id == p.device_id]
        devices[p.device_id] = devices.get(p.device_id, 0) + microseconds(added(mine, p.interval))
        seen.append(p)
    last = max((p.interval.end for p in played), default=None)
    return StoredTotals(total, last, devices)


@settings(max_examples=300, deadline=None)
@given(
    stored=st.lists(_played, max_size=12),
    live=st.lists(_played, max_size=4),
    now_offset=st.integers(min_value=0, max_value=30 * 24 * 3600),
    last_two_weeks=st.booleans(),
)
def test_stats_from_stored_totals_equal_the_stats_of_every_interval(stored, live, now_offset, last_two_weeks):
    now = at(40 * 24 * 3600 + 6 * 3600 + now_offset)
    since = min([now - TWO_WEEKS, *(p.interval.start for p in live)])
    recent = [p for p in stored if p.interval.end > since]
    assert stats_from_totals(
        _stored(stored), recent, live, now, last_two_weeks=last_two_weeks
    ) == product_stats([*stored, *live], now, last_two_weeks=last_two_weeks)


def test_added_counts_only_what_the_existing_intervals_do_not_cover():
    existing = [Interval(at(0), at(60)), Interval(at(100), at(120))]
    assert added(existing, Interval(at(30), at(130))) == timedelta(seconds=50)
    assert added(existing, Interval(at(10), at(50))) == timedelta(0)
    assert added([], Interval(at(10), at(50))) == timedelta(seconds=40)
