"""Download settings use cases: read the user's settings (also for the queue and the catalog, inside their
unit of work), and update them with an etag, telling the user's devices."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.core import replay
from server.core.db import Db, db_of
from server.core.deps import Deps
from server.core.errors import NotFound, ProductAccessDenied
from server.core.events.cloudevents import rfc3339
from server.core.replay import request_key
from server.core.uow import UnitOfWork
from server.core.versioned import Values, etag_of
from server.downloads import catalog
from server.downloads import settings_repository as repository
from server.downloads.settings_rules import (
    DEFAULT_BRANCH,
    DownloadSettings,
    ScheduleWindow,
    SettingsChange,
    apply_change,
    branch_for,
    in_schedule_window,
)
from server.library.entitlements import owned_product_ids

__all__ = [
    "DownloadSettings",
    "branch_for",
    "get_download_settings",
    "in_schedule_window",
    "update_download_settings",
]

DOWNLOAD_SETTINGS_UPDATED_NOTIFICATION = "downloadSettingsUpdated"


@dataclass(frozen=True, slots=True)
class SettingsUpdate:
    change: SettingsChange
    etag: str = ""
    device_id: str = ""


def _settings(row: Values | None, version: int) -> DownloadSettings:
    if row is None:
        return DownloadSettings()
    schedule = None
    if row["schedule_start"] is not None and row["schedule_end"] is not None and row["schedule_time_zone"]:
        schedule = ScheduleWindow(row["schedule_start"], row["schedule_end"], row["schedule_time_zone"])
    return DownloadSettings(
        max_concurrent_downloads=row["max_concurrent_downloads"],
        bandwidth_kbps=row["bandwidth_limit_kbps"],
        schedule=schedule,
        branches=dict(row["product_branches"]),
        etag=etag_of(version),
        updated_at=row["updated_at"],
    )


def _columns(settings: DownloadSettings, device_id: str, now: datetime) -> dict[str, Any]:
    window = settings.schedule
    return {
        "max_concurrent_downloads": settings.max_concurrent_downloads,
        "bandwidth_limit_kbps": settings.bandwidth_kbps,
        "schedule_start": window.start if window else None,
        "schedule_end": window.end if window else None,
        "schedule_time_zone": window.time_zone if window else None,
        "product_branches": dict(settings.branches),
        "updated_by_device_id": device_id,
        "updated_at": now,
    }


async def get_download_settings(
    handle: UnitOfWork | Db | AsyncSession, user_id: uuid.UUID
) -> DownloadSettings:
    """The user's settings (the defaults, etag `v0`, when never changed), read in the caller's unit of
    work (`uow`, `uow.db` or `uow.session`)."""
    db = await db_of(handle.db if isinstance(handle, UnitOfWork) else handle)
    version, row = await repository.find(db, user_id) or (0, None)
    return _settings(row, version)


async def read_download_settings(deps: Deps, user_id: uuid.UUID) -> DownloadSettings:
    async with deps.uow.read() as db:
        return await get_download_settings(db, user_id)


async def update_download_settings(
    deps: Deps, user_id: uuid.UUID, update: SettingsUpdate, request_id: uuid.UUID | None
) -> DownloadSettings:
    """Applies the change (ABORTED ETAG_MISMATCH when `update.etag` is given and stale) and sends
    `downloadSettingsUpdated` with the new settings to the user's devices, so running downloads pick up a
    new bandwidth or concurrency limit. Choosing a non-default branch needs the product in the library
    and a published version on that branch."""
    key = request_key(user_id, "UpdateDownloadSettings", request_id)
    async with deps.uow() as uow:
        if (first := await replay.claim(uow, key, DownloadSettings)) is not None:
            return first
        await _check_branches(uow, user_id, update.change)
        now = deps.clock()
        await repository.write(
            uow.db,
            user_id,
            etag=update.etag,
            build=lambda row: _columns(apply_change(_settings(row, 0), update.change), update.device_id, now),
        )
        result = await get_download_settings(uow, user_id)
        uow.notify(user_id, DOWNLOAD_SETTINGS_UPDATED_NOTIFICATION, _notification(result, update.device_id))
        await replay.remember(uow, key, result)
        await uow.commit()
    return result


async def _check_branches(uow: UnitOfWork, user_id: uuid.UUID, change: SettingsChange) -> None:
    """A branch other than `public` may be chosen only for a product in the library that has a published
    version on it (PRODUCT_ACCESS_DENIED / NOT_FOUND PRODUCT_VERSION_NOT_FOUND otherwise)."""
    chosen = {uuid.UUID(p): branch for p, branch in change.branches.items() if branch != DEFAULT_BRANCH}
    if not chosen:
        return
    owned = await owned_product_ids(uow.db, user_id, chosen)
    if missing := [p for p in chosen if p not in owned]:
        raise ProductAccessDenied(str(missing[0]))
    for product_id, branch in chosen.items():
        try:
            await catalog.resolve_version(uow.session, product_id, branch=branch, version_id=None)
        except NotFound:
            raise NotFound(
                "the product has no published version on that branch",
                reason="PRODUCT_VERSION_NOT_FOUND",
                metadata={"productId": str(product_id), "branch": branch},
            ) from None


def _notification(settings: DownloadSettings, device_id: str) -> dict[str, Any]:
    window = settings.schedule
    return {
        "etag": settings.etag,
        "deviceId": device_id,
        "maxConcurrentDownloads": settings.max_concurrent_downloads,
        "bandwidthLimitKbps": settings.bandwidth_kbps,
        "schedule": (
            {
                "startTime": window.start.strftime("%H:%M"),
                "endTime": window.end.strftime("%H:%M"),
                "timeZone": window.time_zone,
            }
            if window
            else None
        ),
        "productBranches": dict(settings.branches),
        "updatedAt": rfc3339(settings.updated_at) if settings.updated_at else None,
    }
