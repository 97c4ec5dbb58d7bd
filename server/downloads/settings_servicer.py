"""DownloadService's settings RPCs (a mixin of DownloadServiceServicer): validate, map proto ⇄ domain,
call a use case. Nothing else."""

from __future__ import annotations

from datetime import time

from download.v1 import download_service_pb2 as pb
from server.core.auth import current_user_id
from server.core.deps import Deps
from server.core.protoconv import timestamp
from server.core.validation import Validator, parse_uuid
from server.downloads import settings as use_cases
from server.downloads.sessions import DownloadSessions
from server.downloads.settings_rules import (
    BANDWIDTH,
    BRANCHES,
    DEFAULT_MAX_CONCURRENT_DOWNLOADS,
    FIELDS,
    MAX_CONCURRENT,
    SCHEDULE,
    DownloadSettings,
    ScheduleWindow,
    SettingsChange,
    is_time_zone,
)

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


def _schedule(v: Validator, message: pb.DownloadSchedule) -> ScheduleWindow | None:
    """The window; the contract checked the HH:MM forms and the zone's length already."""
    start, end = time.fromisoformat(message.start_time), time.fromisoformat(message.end_time)
    if start == end:
        v.fail("settings.schedule.end_time", "must differ from start_time")
    if not is_time_zone(message.time_zone):
        v.fail("settings.schedule.time_zone", "must be an IANA time zone name, e.g. Europe/Berlin")
    return ScheduleWindow(start, end, message.time_zone)


def _branches(v: Validator, entries) -> dict[str, str]:
    branches: dict[str, str] = {}
    for i, entry in enumerate(entries):
        product_id = str(parse_uuid(entry.product_id))  # canonical: upper and lower case are one product
        if product_id in branches:
            v.fail(f"settings.product_branches[{i}].product_id", "is a duplicate within the request")
        branches[product_id] = entry.branch
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
    change = SettingsChange(
        fields=fields,
        max_concurrent_downloads=(
            settings.max_concurrent_downloads if present[MAX_CONCURRENT] else DEFAULT_MAX_CONCURRENT_DOWNLOADS
        ),
        bandwidth_kbps=settings.bandwidth_limit_kbps,
        schedule=_schedule(v, settings.schedule) if present[SCHEDULE] else None,
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
        # The contract's rules (ranges, HH:MM, branch names, UUIDs, lengths) ran already; what needs more
        # than one field or the time zone database is checked here.
        user_id = current_user_id()
        v = Validator()
        change = _change(v, request)
        v.check()
        update = use_cases.SettingsUpdate(
            change=change, etag=request.settings.etag, device_id=request.device_id
        )
        settings = await use_cases.update_download_settings(
            self._deps, user_id, update, parse_uuid(request.request_id)
        )
        if change.fields & QUEUE_FIELDS:
            # A raised limit or a new window may start waiting downloads now rather than at the promoter's
            # next round (which still catches up should this fail).
            await self._sessions.promote_user(user_id)
        return pb.UpdateDownloadSettingsResponse(settings=settings_pb(settings))
