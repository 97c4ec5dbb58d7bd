"""Download settings: concurrency, bandwidth limit, schedule window and branch per product
(DownloadService.GetDownloadSettings / UpdateDownloadSettings)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf import field_mask_pb2

from client.sdk.connection import Connection, default_device_id, new_request_id
from download.v1 import download_service_pb2 as pb
from download.v1 import download_service_pb2_grpc


@dataclass(frozen=True)
class Schedule:
    """Daily window, `HH:MM` local time in `time_zone`; an end before the start spans midnight."""

    start: str
    end: str
    time_zone: str


@dataclass(frozen=True)
class DownloadSettings:
    max_concurrent_downloads: int
    bandwidth_limit_kbps: int  # 0 = unlimited
    schedule: Schedule | None
    branches: dict[str, str]  # product id → branch, for products not on `public`
    etag: str
    updated_at: datetime | None

    @classmethod
    def from_pb(cls, message: pb.DownloadSettings) -> DownloadSettings:
        window = message.schedule
        return cls(
            max_concurrent_downloads=message.max_concurrent_downloads,
            bandwidth_limit_kbps=message.bandwidth_limit_kbps,
            schedule=Schedule(window.start_time, window.end_time, window.time_zone)
            if message.HasField("schedule")
            else None,
            branches={b.product_id: b.branch for b in message.product_branches},
            etag=message.etag,
            updated_at=message.updated_at.ToDatetime(tzinfo=UTC) if message.HasField("updated_at") else None,
        )


@dataclass(frozen=True)
class DownloadSettingsChange:
    """What to change; None leaves a field as it is. `clear_schedule` removes the window; a branch of
    `public` drops the product's choice."""

    max_concurrent_downloads: int | None = None
    bandwidth_limit_kbps: int | None = None
    schedule: Schedule | None = None
    clear_schedule: bool = False
    branches: Mapping[str, str] = field(default_factory=dict)


class DownloadSettingsClient:
    def __init__(self, connection: Connection, *, device_id: str | None = None) -> None:
        self._connection = connection
        self._stub = download_service_pb2_grpc.DownloadServiceStub(connection.channel)
        self.device_id = device_id or default_device_id()

    async def get(self) -> DownloadSettings:
        reply = await self._connection.call(self._stub.GetDownloadSettings, pb.GetDownloadSettingsRequest())
        return DownloadSettings.from_pb(reply.settings)

    async def update(self, change: DownloadSettingsChange, *, etag: str = "") -> DownloadSettings:
        """Applies the change (with `etag`: only if the settings are still at it)."""
        settings = pb.DownloadSettings(
            max_concurrent_downloads=change.max_concurrent_downloads,
            bandwidth_limit_kbps=change.bandwidth_limit_kbps,
            etag=etag,
        )
        if not change.clear_schedule:
            if change.schedule is not None:
                window = change.schedule
                settings.schedule.CopyFrom(
                    pb.DownloadSchedule(
                        start_time=window.start, end_time=window.end, time_zone=window.time_zone
                    )
                )
            settings.product_branches.extend(
                pb.ProductBranch(product_id=p, branch=b) for p, b in change.branches.items()
            )
            return await self._send(settings, [])
        # Removing the schedule needs an update mask naming it; a mask ignores what it does not name, so
        # the branch choices (merged in, not replaced) go in a second write.
        paths = ["schedule"]
        paths += ["max_concurrent_downloads"] if change.max_concurrent_downloads is not None else []
        paths += ["bandwidth_limit_kbps"] if change.bandwidth_limit_kbps is not None else []
        updated = await self._send(settings, paths)
        if not change.branches:
            return updated
        branches = [pb.ProductBranch(product_id=p, branch=b) for p, b in change.branches.items()]
        return await self._send(pb.DownloadSettings(etag=updated.etag, product_branches=branches), [])

    async def _send(self, settings: pb.DownloadSettings, paths: list[str]) -> DownloadSettings:
        request = pb.UpdateDownloadSettingsRequest(
            settings=settings,
            update_mask=field_mask_pb2.FieldMask(paths=paths),
            device_id=self.device_id,
            request_id=new_request_id(),  # one id for every retry: the server applies it once
        )
        reply = await self._connection.call(self._stub.UpdateDownloadSettings, request)
        return DownloadSettings.from_pb(reply.settings)
