"""DownloadService transport for download sessions: map proto ⇄ domain, call a use case. Nothing else.

Field rules (UUIDs, ranges, lengths, enum values) are the contract's buf.validate annotations, enforced by
the call pipeline before a method runs; what is left here is the installed-file list's cross-entry rules
(catalog.installed_files) and mapping.
"""

from __future__ import annotations

from download.v1 import download_service_pb2 as pb
from server.core.auth import current_user_id, current_user_id_text
from server.core.deps import Deps
from server.core.protoconv import timestamp
from server.core.rate_limit import counts_own_limit
from server.core.validation import Validator, page_size, parse_uuid
from server.downloads import catalog
from server.downloads import session_rules as rules
from server.downloads.session_views import FileReport, ProgressReport, SessionView, StartRequest
from server.downloads.sessions import DownloadSessions

_Status = pb.DownloadSession.DownloadStatus
_FileStatus = pb.DownloadFileReport.FileStatus
_STATUS_VALUES = {number: name.lower() for name, number in _Status.items() if number}
_STATUS_NUMBERS = {name: number for number, name in _STATUS_VALUES.items()}
_REPORTABLE = {0: rules.DOWNLOADING, _Status.DOWNLOADING: rules.DOWNLOADING} | {
    _Status.COMPLETED: rules.COMPLETED,
    _Status.FAILED: rules.FAILED,
}


def session_pb(view: SessionView) -> pb.DownloadSession:
    return pb.DownloadSession(
        download_id=str(view.download_id),
        product_id=str(view.product_id),
        version_id=str(view.version_id),
        installed_version_id=str(view.installed_version_id or ""),
        status=_STATUS_NUMBERS[view.status],
        priority=view.priority,
        installation_path=view.installation_path,
        device_id=view.device_id,
        total_size_bytes=view.total_size_bytes,
        downloaded_bytes=view.downloaded_bytes,
        progress_percentage=view.progress_percentage,
        speed_bytes_per_second=view.speed_bytes_per_second,
        eta_seconds=view.eta_seconds,
        error_message=view.error_message,
        created_at=timestamp(view.created_at),
        updated_at=timestamp(view.updated_at),
        completed_at=timestamp(view.completed_at),
        branch=view.branch,
        start_now=view.start_now,
    )


class SessionServicer:
    """The session RPCs of DownloadService (a mixin of servicer.DownloadServiceServicer)."""

    def __init__(self, deps: Deps):
        self._sessions = DownloadSessions(deps)

    async def StartDownload(self, request: pb.StartDownloadRequest, context):
        user_id = current_user_id()
        v = Validator()
        installed_files = catalog.installed_files(v, request.installed_files)  # paths, duplicates
        v.check()
        view = await self._sessions.start(
            user_id,
            StartRequest(
                product_id=parse_uuid(request.product_id),
                version_id=parse_uuid(request.version_id),
                installation_path=request.installation_path,
                priority=request.priority,
                installed_version_id=parse_uuid(request.installed_version_id),
                installed_files=installed_files,
                device_id=request.device_id,
                start_now=request.start_now,
                request_id=parse_uuid(request.request_id),
            ),
        )
        return pb.StartDownloadResponse(download=session_pb(view))

    async def ListDownloads(self, request: pb.ListDownloadsRequest, context):
        page = await self._sessions.list(
            current_user_id(),
            statuses=sorted({_STATUS_VALUES[status] for status in request.status}),
            product_id=parse_uuid(request.product_id),
            page_size=page_size(request.page_size),
            page_token=request.page_token,
        )
        return pb.ListDownloadsResponse(
            downloads=[session_pb(item) for item in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def GetDownload(self, request: pb.GetDownloadRequest, context):
        view = await self._sessions.get(current_user_id(), parse_uuid(request.download_id))
        return pb.GetDownloadResponse(download=session_pb(view))

    async def PauseDownload(self, request: pb.PauseDownloadRequest, context):
        user_id, download_id, request_id = _target(request)
        view = await self._sessions.pause(user_id, download_id, request_id)
        return pb.PauseDownloadResponse(download=session_pb(view))

    async def ResumeDownload(self, request: pb.ResumeDownloadRequest, context):
        user_id, download_id, request_id = _target(request)
        view = await self._sessions.resume(user_id, download_id, request_id)
        return pb.ResumeDownloadResponse(download=session_pb(view))

    async def CancelDownload(self, request: pb.CancelDownloadRequest, context):
        user_id, download_id, request_id = _target(request)
        view = await self._sessions.cancel(user_id, download_id, request_id)
        return pb.CancelDownloadResponse(download=session_pb(view))

    async def ReprioritizeDownload(self, request: pb.ReprioritizeDownloadRequest, context):
        user_id, download_id, request_id = _target(request)
        view = await self._sessions.reprioritize(user_id, download_id, request.priority, request_id)
        return pb.ReprioritizeDownloadResponse(download=session_pb(view))

    @counts_own_limit  # inside the report's own Redis script: no second round trip per report
    async def ReportDownloadProgress(self, request: pb.ReportDownloadProgressRequest, context):
        status = _REPORTABLE[request.status]
        if status == rules.DOWNLOADING and not request.files:
            # A plain report, most of them: the contract checked the id (string.uuid); lowercased, it is
            # the canonical text Redis holds, as the user's is (no UUID made and printed again per report).
            progress = await self._sessions.report_bytes(
                current_user_id_text(), request.download_id.lower(), request.downloaded_bytes
            )
        else:
            files = [
                FileReport(f.path, f.status == _FileStatus.COMPLETED, f.error_message) for f in request.files
            ]
            progress = await self._sessions.report(
                current_user_id(),
                parse_uuid(request.download_id),
                ProgressReport(request.downloaded_bytes, status, request.error_message, files),
            )
        return pb.ReportDownloadProgressResponse(
            status=_STATUS_NUMBERS[progress.status],
            progress_percentage=progress.progress_percentage,
            speed_bytes_per_second=progress.speed_bytes_per_second,
            eta_seconds=progress.eta_seconds,
        )


def _target(request) -> tuple:
    """Who acts on which download, and the request id of a retried change."""
    return current_user_id(), parse_uuid(request.download_id), parse_uuid(request.request_id)
