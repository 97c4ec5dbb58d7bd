"""Playtime arithmetic (SPEC §6 "Playtime"): pure functions, the clock is always passed in.

Accrual. A session is credited from its heartbeats only, on the server's clock (start and end count as
heartbeats). Consecutive heartbeats at most `2 x interval` apart are joined into one credited segment; a
longer gap is not credited at all and starts a new segment. Crediting even the first `2 x interval` of
such a gap would credit time nobody vouched for (the client was asleep, suspended or crashed), so the
cap is the longest gap that is credited, not an amount credited for any gap.
The live state of a session is (closed segments, current segment start, last heartbeat); `advance` is
the one transition. `server/playtime/live.py` runs the same transition inside Redis for heartbeats.

Union. Credited segments of every device and every session of a (user, product) are merged before they
are measured, so time played on two devices at once, or uploaded again as an offline session, is counted
once. Per-device totals are merged per device only.

Stored totals. Totals are kept as they are credited (microseconds covered by the union, per product and
per device), so a checkpoint adds only what its new time covers beyond the stored intervals it overlaps
(`added`), and statistics read the totals plus the last two weeks of intervals, never a product's whole
history. `product_stats` (from every interval) is the definition; `stats_from_totals` must agree with it
(tests/unit/test_playtime_rules.py).

Window. "Last two weeks" is the exact rolling window `[now - 14 days, now]`; segments crossing its edge
count only for their part inside it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

TWO_WEEKS = timedelta(days=14)
MAX_OFFLINE_SESSION = timedelta(hours=24)


@dataclass(frozen=True, slots=True, order=True)
class Interval:
    start: datetime
    end: datetime

    @property
    def length(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class AccrualPolicy:
    heartbeat_interval: timedelta

    @property
    def max_credited_gap(self) -> timedelta:
        return 2 * self.heartbeat_interval

    @property
    def silence_limit(self) -> timedelta:
        """A session silent this long since its last heartbeat is reaped."""
        return 3 * self.heartbeat_interval


@dataclass(frozen=True, slots=True)
class LiveSession:
    """Accrual state of an active session (kept in Redis between heartbeats)."""

    segment_start: datetime
    last_heartbeat: datetime
    closed: tuple[Interval, ...] = field(default=())

    @classmethod
    def started(cls, at: datetime) -> LiveSession:
        return cls(segment_start=at, last_heartbeat=at)

    def segments(self) -> list[Interval]:
        """Credited segments so far, the open one up to the last heartbeat."""
        current = Interval(self.segment_start, self.last_heartbeat)
        return [*self.closed, current] if current.length > timedelta(0) else list(self.closed)

    def credited(self) -> timedelta:
        return sum((s.length for s in self.segments()), timedelta(0))


def advance(state: LiveSession, now: datetime, policy: AccrualPolicy) -> LiveSession:
    """Applies a heartbeat at server time `now`. A heartbeat older than the last one changes nothing
    (several server processes, tiny clock differences)."""
    if now <= state.last_heartbeat:
        return state
    if now - state.last_heartbeat > policy.max_credited_gap:
        current = Interval(state.segment_start, state.last_heartbeat)
        closed = (*state.closed, current) if current.length > timedelta(0) else state.closed
        return LiveSession(segment_start=now, last_heartbeat=now, closed=closed)
    return replace(state, last_heartbeat=now)


def is_silent(last_heartbeat: datetime, now: datetime, policy: AccrualPolicy) -> bool:
    """Silent sessions are reaped. A session Redis does not know is judged by its last checkpointed
    heartbeat, so a session that was just started (its live state not yet visible) is never reaped."""
    return now - last_heartbeat > policy.silence_limit


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint intervals covering exactly the same time; touching intervals are joined."""
    merged: list[Interval] = []
    for interval in sorted(i for i in intervals if i.end > i.start):
        if merged and interval.start <= merged[-1].end:
            if interval.end > merged[-1].end:
                merged[-1] = Interval(merged[-1].start, interval.end)
        else:
            merged.append(interval)
    return merged


def clip(intervals: Iterable[Interval], low: datetime, high: datetime) -> list[Interval]:
    """The parts of `intervals` inside `[low, high]`."""
    clipped = (Interval(max(i.start, low), min(i.end, high)) for i in intervals)
    return [i for i in clipped if i.end > i.start]


def seconds(intervals: Iterable[Interval]) -> int:
    """Whole seconds covered by `intervals`, overlaps counted once."""
    total = sum((i.length for i in union(intervals)), timedelta(0))
    return int(total.total_seconds())


@dataclass(frozen=True, slots=True)
class DeviceInterval:
    device_id: str
    interval: Interval


@dataclass(frozen=True, slots=True)
class ProductStats:
    total_seconds: int
    last_two_weeks_seconds: int
    last_played_at: datetime | None
    device_seconds: list[tuple[str, int]]

    def period_seconds(self, last_two_weeks: bool) -> int:
        return self.last_two_weeks_seconds if last_two_weeks else self.total_seconds


def product_stats(played: Iterable[DeviceInterval], now: datetime, *, last_two_weeks: bool) -> ProductStats:
    """Totals of one product; per-device totals cover the requested period, largest first."""
    played = list(played)
    if not played:  # most products of a library (a statistics call covers them all)
        return ProductStats(total_seconds=0, last_two_weeks_seconds=0, last_played_at=None, device_seconds=[])
    window_start = now - TWO_WEEKS
    all_intervals = [p.interval for p in played]
    by_device: dict[str, list[Interval]] = {}
    for p in played:
        by_device.setdefault(p.device_id, []).append(p.interval)
    device_seconds = [
        (device, seconds(clip(intervals, window_start, now) if last_two_weeks else intervals))
        for device, intervals in by_device.items()
    ]
    return ProductStats(
        total_seconds=seconds(all_intervals),
        last_two_weeks_seconds=seconds(clip(all_intervals, window_start, now)),
        last_played_at=max((i.end for i in all_intervals), default=None),
        device_seconds=sorted(((d, s) for d, s in device_seconds if s > 0), key=lambda ds: (-ds[1], ds[0])),
    )


MICROSECOND = timedelta(microseconds=1)


def microseconds(length: timedelta) -> int:
    return length // MICROSECOND


def added(existing: Iterable[Interval], new: Interval) -> timedelta:
    """How much of `new` the union of `existing` does not cover yet."""
    covered = union(clip(existing, new.start, new.end))
    return new.length - sum((i.length for i in covered), timedelta(0))


@dataclass(frozen=True, slots=True)
class StoredTotals:
    """What the database keeps for one product of a user: the union's length, the last played time and the
    union's length per device, all over every credited interval."""

    total_us: int = 0
    last_played_at: datetime | None = None
    device_us: dict[str, int] = field(default_factory=dict)


NOTHING_STORED = StoredTotals()
UNPLAYED = ProductStats(total_seconds=0, last_two_weeks_seconds=0, last_played_at=None, device_seconds=[])


def stats_from_totals(
    stored: StoredTotals,
    stored_recent: list[DeviceInterval],
    live: list[DeviceInterval],
    now: datetime,
    *,
    last_two_weeks: bool,
) -> ProductStats:
    """`product_stats` of (every stored interval + `live`), from the stored totals, the stored intervals
    that end inside the window or overlap a live segment (`stored_recent`), and the live segments of active
    sessions (which may repeat what their checkpoints stored)."""
    if stored is NOTHING_STORED and not stored_recent and not live:
        return UNPLAYED  # most products of a library (a statistics call covers them all)
    total_us, device_us = stored.total_us, dict(stored.device_us)
    existing = [p.interval for p in stored_recent]
    by_device: dict[str, list[Interval]] = {}
    for p in stored_recent:
        by_device.setdefault(p.device_id, []).append(p.interval)
    for p in sorted(live, key=lambda p: p.interval):
        total_us += microseconds(added(existing, p.interval))
        existing.append(p.interval)
        mine = by_device.setdefault(p.device_id, [])
        device_us[p.device_id] = device_us.get(p.device_id, 0) + microseconds(added(mine, p.interval))
        mine.append(p.interval)
    window_start = now - TWO_WEEKS
    if last_two_weeks:
        device_seconds = [(d, seconds(clip(i, window_start, now))) for d, i in by_device.items()]
    else:
        device_seconds = [(d, us // 1_000_000) for d, us in device_us.items()]
    last_played = max(
        (t for t in [stored.last_played_at, *(p.interval.end for p in live)] if t is not None), default=None
    )
    return ProductStats(
        total_seconds=total_us // 1_000_000,
        last_two_weeks_seconds=seconds(clip(existing, window_start, now)),
        last_played_at=last_played,
        device_seconds=sorted(((d, s) for d, s in device_seconds if s > 0), key=lambda ds: (-ds[1], ds[0])),
    )


class OfflineRejection(enum.Enum):
    IN_FUTURE = "IN_FUTURE"
    TOO_LONG = "TOO_LONG"
    INVALID_INTERVAL = "INVALID_INTERVAL"
    PRODUCT_NOT_OWNED = "PRODUCT_NOT_OWNED"
    BEFORE_ACQUISITION = "BEFORE_ACQUISITION"
    TOO_OLD = "TOO_OLD"


@dataclass(frozen=True, slots=True)
class OfflineBounds:
    """Where an offline session may lie: not after `now` (give or take the clock skew), not starting
    before `oldest` (the configured age limit) nor before the product was acquired."""

    now: datetime
    clock_skew: timedelta
    oldest: datetime


def offline_rejection(
    interval: Interval, bounds: OfflineBounds, acquired_at: datetime | None
) -> OfflineRejection | None:
    """Why an offline session can't be recorded, or None when it can. `acquired_at`: when the user
    acquired the product, None when they do not own it."""
    if interval.end <= interval.start:
        return OfflineRejection.INVALID_INTERVAL
    if interval.end > bounds.now + bounds.clock_skew:
        return OfflineRejection.IN_FUTURE
    if interval.length > MAX_OFFLINE_SESSION:
        return OfflineRejection.TOO_LONG
    if interval.start < bounds.oldest:
        return OfflineRejection.TOO_OLD
    if acquired_at is None:
        return OfflineRejection.PRODUCT_NOT_OWNED
    if interval.start < acquired_at:
        return OfflineRejection.BEFORE_ACQUISITION
    return None


def until(intervals: Iterable[Interval], end: datetime | None) -> list[Interval]:
    """The parts of `intervals` up to `end` (all of them when None): play after an entitlement was
    revoked is not credited."""
    intervals = list(intervals)
    if end is None:
        return intervals
    return [i if i.end <= end else Interval(i.start, end) for i in intervals if i.start < end]


def creditable(interval: Interval, now: datetime) -> Interval:
    """An accepted offline session credits nothing after `now` (its end may be a little ahead: skew)."""
    end = min(interval.end, now)
    return Interval(min(interval.start, end), end)
