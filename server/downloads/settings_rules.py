"""Pure rules of download settings: defaults, the daily schedule window, branches per product, and what an
update changes."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from server.core.versioned import etag_of

DEFAULT_MAX_CONCURRENT_DOWNLOADS = 3
DEFAULT_BRANCH = "public"

# The fields an update may name (UpdateDownloadSettingsRequest.update_mask paths).
MAX_CONCURRENT = "max_concurrent_downloads"
BANDWIDTH = "bandwidth_limit_kbps"
SCHEDULE = "schedule"
BRANCHES = "product_branches"
FIELDS = frozenset({MAX_CONCURRENT, BANDWIDTH, SCHEDULE, BRANCHES})


@dataclass(frozen=True, slots=True)
class ScheduleWindow:
    """A daily window of local wall-clock time in `time_zone` (IANA name). `end` before `start` spans
    midnight (22:00-06:00); `end` is exclusive."""

    start: time
    end: time
    time_zone: str


@dataclass(frozen=True, slots=True)
class DownloadSettings:
    """A user's download settings; what a never-updated user gets is the defaults, etag `v0`."""

    max_concurrent_downloads: int = DEFAULT_MAX_CONCURRENT_DOWNLOADS
    bandwidth_kbps: int = 0  # 0 = unlimited
    schedule: ScheduleWindow | None = None
    # Product id (canonical UUID string) → branch, for products not on the default branch.
    branches: Mapping[str, str] = field(default_factory=dict)
    etag: str = etag_of(0)
    updated_at: datetime | None = None

    def branch_for(self, product_id: uuid.UUID | str) -> str:
        return self.branches.get(str(product_id), DEFAULT_BRANCH)


def branch_for(settings: DownloadSettings, product_id: uuid.UUID | str) -> str:
    """The branch the user follows for the product (`public` unless they chose another)."""
    return settings.branch_for(product_id)


def in_schedule_window(settings: DownloadSettings, now: datetime) -> bool:
    """Whether queued downloads may start at `now` (an aware datetime): always without a schedule."""
    window = settings.schedule
    if window is None:
        return True
    local = now.astimezone(ZoneInfo(window.time_zone)).time().replace(tzinfo=None)
    if window.start < window.end:
        return window.start <= local < window.end
    return local >= window.start or local < window.end


def is_time_zone(name: str) -> bool:
    """An IANA time zone name this server knows (`Europe/Berlin`, `UTC`)."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class SettingsChange:
    """What an update changes. `fields`: those it sets (a field named without a value resets it to its
    default). Branches: with BRANCHES in `fields` the map is replaced by `branches`; otherwise the entries
    of `branches` are merged in. Either way an entry naming the default branch removes the product's
    choice."""

    fields: frozenset[str] = frozenset()
    max_concurrent_downloads: int = DEFAULT_MAX_CONCURRENT_DOWNLOADS
    bandwidth_kbps: int = 0
    schedule: ScheduleWindow | None = None
    branches: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not self.fields and not self.branches


def apply_change(current: DownloadSettings, change: SettingsChange) -> DownloadSettings:
    """The settings after `change` (etag and time untouched: the write sets them)."""
    branches = {} if BRANCHES in change.fields else dict(current.branches)
    for product_id, branch in change.branches.items():
        if branch == DEFAULT_BRANCH:
            branches.pop(product_id, None)
        else:
            branches[product_id] = branch
    updated = replace(current, branches=branches)
    if MAX_CONCURRENT in change.fields:
        updated = replace(updated, max_concurrent_downloads=change.max_concurrent_downloads)
    if BANDWIDTH in change.fields:
        updated = replace(updated, bandwidth_kbps=change.bandwidth_kbps)
    if SCHEDULE in change.fields:
        updated = replace(updated, schedule=change.schedule)
    return updated
