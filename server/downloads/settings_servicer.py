"""DownloadService's settings RPCs (a mixin of DownloadServiceServicer): validate, map proto ⇄ domain,
call a use case. Nothing else."""

from __future__ import annotations

import re
from datetime import time

from download.v1 import download_service_pb2 as pb
from server.core.auth import current_user_id
from server.core.deps import Deps
from server.core.protoconv import timestamp
from server.core.validation import Validator
from server.downloads import settings as use_cases
from server.downloads.sessions import DownloadSessions
from server.downloads.settings_rules import (
    BANDWIDTH,
    BRANCHES,
    DEFAULT_MAX_CONCURRENT_DOWNLOADS,
    FIELDS,
    MAX_CONCURRENT,
    MAX_MAX_CONCURRENT_DOWNLOADS,
    MIN_MAX_CONCURRENT_DOWNLOADS,
    SCHEDULE,
    DownloadSettings,
    ScheduleWindow,
    SettingsChange,
    is_time_zone,
)

MAX_ETAG_LEN = 64
MAX_DEVICE_ID_LEN = 128
MAX_TIME_ZONE_LEN = 64
MAX_PRODUCT_BRANCHES = 1000
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_BRANCH = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The settings the download queue depends on.
QUEUE_FIELDS = frozenset({MAX_CONCURRENT, SCHEDULE})


def settings_pb(settings: DownloadSettings) -> pb.DownloadSettings:
    window = settings.schedule
    return pb.DownloadSettings(
        max_concurrent_downloads=settings.max_concurrent_downloads,
        bandwidth_limit_kbps=settings.bandwidth_kbps,
        etag=settings.etag,
        updated_at=timestamp(settings.updated_at),
        schedule=(
            pb.DownloadSchedule(
                start_time=window.start.strftime("%H:%M"),
                end_time=window.end.strftime("%H:%M"),
                time_zone=window.time_zone,
            )
            if window
            else None
        ),
        product_branches=[
            pb.ProductBranch(product_id=product_id, branch=branch)
            for product_id, branch in sorted(settings.branches.items())
        ],
    )


def _clock(v: Validator, field: str, value: str) -> time | None:
    if not _CLOCK.fullmatch(value):
        v.fail(field, "must be HH:MM (00:00-23:59)")
        return None
    return time.fromisoformat(value)


def _schedule(v: Validator, message: pb.DownloadSchedule) -> ScheduleWindow | None:
    start = _clock(v, "settings.schedule.start_time", message.start_time)
    end = _clock(v, "settings.schedule.end_time", message.end_time)
    if start is not None and start == end:
        v.fail("settings.schedule.end_time", "must differ from start_time")
    zone = message.time_zone
    if len(zone) > MAX_TIME_ZONE_LEN or not is_time_zone(zone):
        v.fail("settings.schedule.time_zone", "must be an IANA time zone name, e.g. Europe/Berlin")
    if v.violations or start is None or end is None:
        return None
    return ScheduleWindow(start, end, zone)


def _branches(v: Validator, entries) -> dict[str, str]:
    if len(entries) > MAX_PRODUCT_BRANCHES:
        v.fail("settings.product_branches", f"at most {MAX_PRODUCT_BRANCHES} entries")
        return {}
    branches: dict[str, str] = {}
    for i, entry in enumerate(entries):
        field = f"settings.product_branches[{i}]"
        product_id = v.uuid(f"{field}.product_id", entry.product_id)
        if not _BRANCH.fullmatch(entry.branch):
            v.fail(f"{field}.branch", "must be 1-64 of [a-z0-9._-], starting with a letter or digit")
        if product_id is not None:
            if str(product_id) in branches:
                v.fail(f"{field}.product_id", "is a duplicate within the request")
            branches[str(product_id)] = entry.branch
    return branches


def _change(v: Validator, request: pb.UpdateDownloadSettingsRequest) -> SettingsChange:
    settings = request.settings
    masked = frozenset(request.update_mask.paths)
    for i, path in enumerate(request.update_mask.paths):
        if path not in FIELDS:
            v.fail(f"update_mask.paths[{i}]", f"unknown field; one of {', '.join(sorted(FIELDS))}")
    present = {
        MAX_CONCURRENT: settings.HasField(MAX_CONCURRENT),
        BANDWIDTH: settings.HasField(BANDWIDTH),
        SCHEDULE: settings.HasField(SCHEDULE),
    }
    fields = masked & FIELDS if masked else frozenset(name for name, given in present.items() if given)
    max_concurrent = (
        settings.max_concurrent_downloads if present[MAX_CONCURRENT] else DEFAULT_MAX_CONCURRENT_DOWNLOADS
    )
    if not MIN_MAX_CONCURRENT_DOWNLOADS <= max_concurrent <= MAX_MAX_CONCURRENT_DOWNLOADS:
        v.fail("settings.max_concurrent_downloads", "must be 1-10")
    v.non_negative("settings.bandwidth_limit_kbps", settings.bandwidth_limit_kbps)
    schedule = _schedule(v, settings.schedule) if present[SCHEDULE] else None
    change = SettingsChange(
        fields=fields,
        max_concurrent_downloads=max_concurrent,
        bandwidth_kbps=settings.bandwidth_limit_kbps,
        schedule=schedule,
        # With a mask, a field it does not name is ignored (AIP-134), branch entries included.
        branches=_branches(v, settings.product_branches) if not masked or BRANCHES in masked else {},
    )
    if change.is_empty and not v.violations:
        v.fail("settings", "names nothing to change")
    return change


class DownloadSettingsServicer:
    """The settings RPCs of DownloadService (a mixin of servicer.DownloadServiceServicer, which provides
    `_deps` and the queue, `_sessions`)."""

    _deps: Deps
    _sessions: DownloadSessions

    async def GetDownloadSettings(self, request: pb.GetDownloadSettingsRequest, context):
        settings = await use_cases.read_download_settings(self._deps, current_user_id())
        return pb.GetDownloadSettingsResponse(settings=settings_pb(settings))

    async def UpdateDownloadSettings(self, request: pb.UpdateDownloadSettingsRequest, context):
        user_id = current_user_id()
        v = Validator()
        if not request.HasField("settings"):
            v.fail("settings", "is required")
        change = _change(v, request)
        v.text("settings.etag", request.settings.etag, max_len=MAX_ETAG_LEN)
        v.text("device_id", request.device_id, max_len=MAX_DEVICE_ID_LEN)
        if _CONTROL.search(request.device_id):
            v.fail("device_id", "must not contain control characters")
        request_id = v.request_id(request.request_id)
        v.check()
        update = use_cases.SettingsUpdate(
            change=change, etag=request.settings.etag, device_id=request.device_id
        )
        settings = await use_cases.update_download_settings(self._deps, user_id, update, request_id)
        if change.fields & QUEUE_FIELDS:
            # A raised limit or a new window may start waiting downloads now rather than at the promoter's
            # next round (which still catches up should this fail).
            await self._sessions.promote_user(user_id)
        return pb.UpdateDownloadSettingsResponse(settings=settings_pb(settings))
