"""What the download-session use cases take and answer: a session with its live progress folded in,
the inputs of StartDownload and ReportDownloadProgress, a progress answer, a page of sessions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from server.downloads import catalog
from server.downloads import session_rules as rules
from server.downloads.progress import LiveState
from server.downloads.session_tables import DownloadSession


@dataclass(frozen=True)
class SessionView:
    """A session as the RPCs answer it: its row with the live progress folded in."""

    download_id: uuid.UUID
    product_id: uuid.UUID
    version_id: uuid.UUID
    installed_version_id: uuid.UUID | None
    branch: str
    status: str
    priority: int
    start_now: bool
    installation_path: str
    device_id: str
    total_size_bytes: int
    downloaded_bytes: int
    speed_bytes_per_second: int
    eta_seconds: int | None
    error_message: str
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None

    @property
    def progress_percentage(self) -> float:
        return rules.progress_percentage(self.downloaded_bytes, self.total_size_bytes)

    @classmethod
    def of(cls, row: DownloadSession, live: LiveState | None = None) -> SessionView:
        downloaded = row.downloaded_bytes
        speed = 0.0
        if live is not None and live.status == row.status == rules.DOWNLOADING:
            downloaded, speed = live.downloaded, live.speed
        return cls(
            download_id=row.id,
            product_id=row.product_id,
            version_id=row.version_id,
            installed_version_id=row.installed_version_id,
            branch=row.branch,
            status=row.status,
            priority=row.priority,
            start_now=row.start_now,
            installation_path=row.installation_path,
            device_id=row.device_id,
            total_size_bytes=row.total_size_bytes,
            downloaded_bytes=downloaded,
            speed_bytes_per_second=int(speed),
            eta_seconds=rules.eta_seconds(downloaded, row.total_size_bytes, speed),
            error_message=row.error_message,
            created_at=row.created_at,
            updated_at=row.updated_at,
            completed_at=row.completed_at,
        )


@dataclass(frozen=True)
class StartRequest:
    product_id: uuid.UUID
    version_id: uuid.UUID | None
    installation_path: str
    priority: int
    installed_version_id: uuid.UUID | None
    installed_files: list[catalog.InstalledFile]
    device_id: str
    start_now: bool
    request_id: uuid.UUID | None


@dataclass(frozen=True)
class FileReport:
    path: str
    completed: bool  # else failed
    error_message: str = ""


@dataclass(frozen=True)
class ProgressReport:
    downloaded_bytes: int
    status: str  # DOWNLOADING (a plain report), COMPLETED or FAILED
    error_message: str = ""
    files: list[FileReport] = field(default_factory=list)


@dataclass(slots=True)
class ProgressView:
    status: str
    progress_percentage: float
    speed_bytes_per_second: int
    eta_seconds: int | None


@dataclass(frozen=True)
class Page:
    items: list[SessionView]
    next_page_token: str
    total_size: int
