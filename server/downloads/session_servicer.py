"""DownloadService transport for download sessions: map proto ⇄ domain, call a use case. Nothing else.

Field rules (UUIDs, ranges, lengths) are the contract's buf.validate annotations; the checks here parse
what the use cases need and repeat the ones a use case could not do without.
"""

from __future__ import annotations

from download.v1 import download_service_pb2 as pb
from server.core.auth import current_user_id
from server.core.deps import Deps
from server.core.protoconv import timestamp
from server.core.validation import Validator
from server.downloads import catalog
from server.downloads import session_rules as rules
from server.downloads.session_views import FileReport, ProgressReport, SessionView, StartRequest
from server.downloads.sessions import DownloadSessions

_Status = pb.DownloadSession.DownloadStatus
_FileStatus = pb.DownloadFileReport.FileStatus
_STATUS_VALUES = {number: name.lower() for name, number in _Status.items() if number}
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
        status=_Status.Value(view.status.upper()),
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


def _priority(v: Validator, value: int) -> int:
    if not rules.MIN_PRIORITY <= value <= rules.MAX_PRIORITY:
        v.fail("priority", f"must be between {rules.MIN_PRIORITY} and {rules.MAX_PRIORITY}")
    return value


class SessionServicer:
    """The session RPCs of DownloadService (a mixin of servicer.DownloadServiceServicer)."""

    def __init__(self, deps: Deps):
        self._sessions = DownloadSessions(deps)

    async def StartDownload(self, request: pb.StartDownloadRequest, context):
        user_id = current_user_id()
        v = Validator()
        product_id = v.uuid("product_id", request.product_id)
        version_id = v.uuid("version_id", request.version_id, required=False)
        installed_version_id = v.uuid("installed_version_id", request.installed_version_id, required=False)
        installation_path = v.text(
            "installation_path", request.installation_path, max_len=1024, required=True
        )
        device_id = v.text("device_id", request.device_id, max_len=128)
        priority = _priority(v, request.priority)
        request_id = v.request_id(request.request_id)
        installed_files = catalog.installed_files(v, request.installed_files)
        v.check()
        view = await self._sessions.start(
            user_id,
            StartRequest(
                product_id=product_id,
                version_id=version_id,
                installation_path=installation_path,
                priority=priority,
                installed_version_id=installed_version_id,
                installed_files=installed_files,
                device_id=device_id,
                start_now=request.start_now,
                request_id=request_id,
            ),
        )
        return pb.StartDownloadResponse(download=session_pb(view))

    async def ListDownloads(self, request: pb.ListDownloadsRequest, context):
        user_id = current_user_id()
        v = Validator()
        statuses = []
        for i, status in enumerate(request.status):
            if status not in _STATUS_VALUES:
                v.fail(f"status[{i}]", "must be a defined download status")
            else:
                statuses.append(_STATUS_VALUES[status])
        product_id = v.uuid("product_id", request.product_id, required=False)
        page_size = v.page_size(request.page_size)
        v.check()
        page = await self._sessions.list(
            user_id,
            statuses=sorted(set(statuses)),
            product_id=product_id,
            page_size=page_size,
            page_token=request.page_token,
        )
        return pb.ListDownloadsResponse(
            downloads=[session_pb(item) for item in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def GetDownload(self, request: pb.GetDownloadRequest, context):
        user_id = current_user_id()
        v = Validator()
        download_id = v.uuid("download_id", request.download_id)
        v.check()
        return pb.GetDownloadResponse(download=session_pb(await self._sessions.get(user_id, download_id)))

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
        user_id = current_user_id()
        v = Validator()
        download_id = v.uuid("download_id", request.download_id)
        priority = _priority(v, request.priority)
        request_id = v.request_id(request.request_id)
        v.check()
        view = await self._sessions.reprioritize(user_id, download_id, priority, request_id)
        return pb.ReprioritizeDownloadResponse(download=session_pb(view))

    async def ReportDownloadProgress(self, request: pb.ReportDownloadProgressRequest, context):
        user_id = current_user_id()
        v = Validator()
        download_id = v.uuid("download_id", request.download_id)
        downloaded = v.non_negative("downloaded_bytes", request.downloaded_bytes)
        status = _REPORTABLE.get(request.status)
        if status is None:
            v.fail("status", "must be DOWNLOADING, COMPLETED or FAILED")
        error_message = v.text("error_message", request.error_message, max_len=1024)
        files = []
        for i, f in enumerate(request.files):
            path = v.text(f"files[{i}].path", f.path, max_len=4096, required=True)
            if f.status not in (_FileStatus.COMPLETED, _FileStatus.FAILED):
                v.fail(f"files[{i}].status", "must be COMPLETED or FAILED")
            message = v.text(f"files[{i}].error_message", f.error_message, max_len=1024)
            files.append(FileReport(path, f.status == _FileStatus.COMPLETED, message))
        v.check()
        assert download_id is not None and status is not None
        progress = await self._sessions.report(
            user_id, download_id, ProgressReport(downloaded, status, error_message, files)
        )
        return pb.ReportDownloadProgressResponse(
            status=_Status.Value(progress.status.upper()),
            progress_percentage=progress.progress_percentage,
            speed_bytes_per_second=progress.speed_bytes_per_second,
            eta_seconds=progress.eta_seconds,
        )


def _target(request):
    user_id = current_user_id()
    v = Validator()
    download_id = v.uuid("download_id", request.download_id)
    request_id = v.request_id(request.request_id)
    v.check()
    return user_id, download_id, request_id
