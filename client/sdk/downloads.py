"""Downloads (DownloadService): sessions and their queue, manifests, progress and completion reports, update
checks, verification, published versions, and the download WebSocket that pushes settings and status changes.

    async with Connection(token) as conn:
        downloads = DownloadsClient(conn)
        session = await downloads.start(product_id, installation_path="/games/x")
        async for page in downloads.manifest(session.download_id):
            ...
        await downloads.complete(session.download_id, downloaded_bytes=n)

Writes the server may see twice (start, pause / resume / cancel / reprioritize, verify) carry one request id
across their retries, so a retry after a lost reply changes nothing (AIP-155). The engine that turns a
manifest into files on disk is `client/engine/`; this module only speaks the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from client.sdk.connection import Connection, default_device_id, new_request_id
from download.v1 import download_service_pb2 as pb
from download.v1 import download_service_pb2_grpc

Status = pb.DownloadSession.DownloadStatus
MANIFEST_PAGE_SIZE = 200
MAX_FILES_PER_REPORT = 1000
MAX_CHUNKS_PER_REPORT = 10000
SETTINGS_UPDATED = "downloadSettingsUpdated"
STATUS_CHANGED = "downloadStatusChanged"
PROGRESS = "downloadProgress"


def status_name(status: int) -> str:
    """`DOWNLOADING` → `downloading` (the seed's lowercase names)."""
    return Status.Name(status).lower()


@dataclass(frozen=True)
class LocalFile:
    """A file on disk as VerifyInstallation and StartDownload take it; `chunks` are (offset, size, sha256)
    of byte ranges, sent for files that differ so only their bad ranges are re-fetched."""

    path: str
    size_bytes: int
    sha256: str
    chunks: tuple[tuple[int, int, str], ...] = ()

    def to_pb(self) -> pb.InstalledFile:
        return pb.InstalledFile(
            path=self.path,
            size_bytes=self.size_bytes,
            sha256=self.sha256,
            chunks=[pb.InstalledChunk(offset=o, size_bytes=s, sha256=h) for o, s, h in self.chunks],
        )


class DownloadsClient:
    def __init__(self, connection: Connection, *, device_id: str | None = None) -> None:
        self._connection = connection
        self._stub = download_service_pb2_grpc.DownloadServiceStub(connection.channel)
        self.device_id = device_id or default_device_id()

    # ---------------------------------------------------------------- sessions and the queue
    async def start(
        self,
        product_id: str,
        *,
        installation_path: str,
        version_id: str = "",
        installed_version_id: str = "",
        installed_files: Sequence[LocalFile] = (),
        priority: int = 0,
        start_now: bool = True,
    ) -> pb.DownloadSession:
        """Queues a download of the product (its branch's latest, or `version_id`: an older one is a
        rollback). Given what is installed, only the chunks it lacks count towards the session's total."""
        request = pb.StartDownloadRequest(
            product_id=product_id,
            version_id=version_id,
            installation_path=installation_path,
            priority=priority,
            installed_version_id=installed_version_id,
            installed_files=[f.to_pb() for f in installed_files],
            device_id=self.device_id,
            request_id=new_request_id(),
            start_now=start_now,
        )
        return (await self._connection.call(self._stub.StartDownload, request)).download

    async def get(self, download_id: str) -> pb.DownloadSession:
        request = pb.GetDownloadRequest(download_id=download_id)
        return (await self._connection.call(self._stub.GetDownload, request)).download

    async def list_page(
        self,
        *,
        statuses: Iterable[int] = (),
        product_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListDownloadsResponse:
        request = pb.ListDownloadsRequest(
            status=list(statuses), product_id=product_id, page_size=page_size, page_token=page_token
        )
        return await self._connection.call(self._stub.ListDownloads, request)

    async def list_all(
        self, *, statuses: Iterable[int] = (), product_id: str = ""
    ) -> list[pb.DownloadSession]:
        """Every download of the caller (newest first, as the server orders them), all pages."""
        statuses, found, token = list(statuses), [], ""
        while True:
            page = await self.list_page(
                statuses=statuses, product_id=product_id, page_size=200, page_token=token
            )
            found.extend(page.downloads)
            token = page.next_page_token
            if not token:
                return found

    async def pause(self, download_id: str) -> pb.DownloadSession:
        request = pb.PauseDownloadRequest(download_id=download_id, request_id=new_request_id())
        return (await self._connection.call(self._stub.PauseDownload, request)).download

    async def resume(self, download_id: str) -> pb.DownloadSession:
        request = pb.ResumeDownloadRequest(download_id=download_id, request_id=new_request_id())
        return (await self._connection.call(self._stub.ResumeDownload, request)).download

    async def cancel(self, download_id: str) -> pb.DownloadSession:
        request = pb.CancelDownloadRequest(download_id=download_id, request_id=new_request_id())
        return (await self._connection.call(self._stub.CancelDownload, request)).download

    async def reprioritize(self, download_id: str, priority: int) -> pb.DownloadSession:
        request = pb.ReprioritizeDownloadRequest(
            download_id=download_id, priority=priority, request_id=new_request_id()
        )
        return (await self._connection.call(self._stub.ReprioritizeDownload, request)).download

    # ---------------------------------------------------------------- manifests
    async def manifest_page(
        self, download_id: str, *, page_token: str = "", page_size: int = MANIFEST_PAGE_SIZE
    ) -> pb.GetDownloadManifestResponse:
        """One page of files with their chunks and signed links. Asking again with the same token gives the
        same files with links valid for at least a third of their lifetime (how expired links are renewed)."""
        request = pb.GetDownloadManifestRequest(
            download_id=download_id, page_size=page_size, page_token=page_token
        )
        return await self._connection.call(self._stub.GetDownloadManifest, request, timeout=60.0)

    async def manifest(
        self, download_id: str, *, page_size: int = MANIFEST_PAGE_SIZE
    ) -> AsyncIterator[tuple[str, pb.GetDownloadManifestResponse]]:
        """(the token that asked for it, page) for every page of the manifest, in path order."""
        token = ""
        while True:
            page = await self.manifest_page(download_id, page_token=token, page_size=page_size)
            yield token, page
            token = page.next_page_token
            if not token:
                return

    # ---------------------------------------------------------------- progress and completion
    async def report_progress(
        self,
        download_id: str,
        downloaded_bytes: int,
        *,
        completed_chunks: Sequence[str] = (),
        completed_files: Sequence[str] = (),
        failed_files: Mapping[str, str] | None = None,
        status: int = Status.DOWNLOAD_STATUS_UNSPECIFIED,
        error_message: str = "",
    ) -> pb.ReportDownloadProgressResponse:
        """Live progress (Redis only on the server); the reply carries the session's status, so a pause or
        cancel made elsewhere reaches the downloader with its next report. With status COMPLETED or
        FAILED the session ends (a retried final report is harmless)."""
        files = [
            pb.DownloadFileReport(path=p, status=pb.DownloadFileReport.COMPLETED) for p in completed_files
        ]
        files += [
            pb.DownloadFileReport(path=p, status=pb.DownloadFileReport.FAILED, error_message=m[:1024])
            for p, m in (failed_files or {}).items()
        ]
        request = pb.ReportDownloadProgressRequest(
            download_id=download_id,
            downloaded_bytes=downloaded_bytes,
            completed_chunk_hashes=list(completed_chunks)[:MAX_CHUNKS_PER_REPORT],
            status=status,
            error_message=error_message[:1024],
            files=files[:MAX_FILES_PER_REPORT],
        )
        return await self._connection.call(self._stub.ReportDownloadProgress, request)

    async def complete(
        self, download_id: str, downloaded_bytes: int, *, completed_files: Sequence[str] = ()
    ) -> pb.ReportDownloadProgressResponse:
        """Ends the session as completed (every file written and verified): the library item becomes
        installed at the session's version. Files beyond one report's limit go in reports before it."""
        files = list(completed_files)
        while len(files) > MAX_FILES_PER_REPORT:
            await self.report_progress(
                download_id, downloaded_bytes, completed_files=files[:MAX_FILES_PER_REPORT]
            )
            files = files[MAX_FILES_PER_REPORT:]
        return await self.report_progress(
            download_id, downloaded_bytes, completed_files=files, status=Status.COMPLETED
        )

    async def fail(
        self, download_id: str, downloaded_bytes: int, message: str
    ) -> pb.ReportDownloadProgressResponse:
        return await self.report_progress(
            download_id, downloaded_bytes, status=Status.FAILED, error_message=message
        )

    # ---------------------------------------------------------------- updates, verification, versions
    async def check_updates(self, installed: Mapping[str, str]) -> list[pb.ProductUpdate]:
        """Per installed product (id → installed version id): its branch's latest, the bytes to download
        and to write, and the release notes."""
        request = pb.CheckUpdatesRequest(
            installed_products=[
                pb.InstalledProduct(product_id=p, installed_version_id=v) for p, v in installed.items()
            ]
        )
        return list((await self._connection.call(self._stub.CheckUpdates, request)).updates)

    async def verify(
        self, product_id: str, version_id: str, files: Sequence[LocalFile]
    ) -> pb.VerificationResult:
        """The damaged and missing files of an installation, each with exactly the chunks to re-fetch (and
        signed links for them)."""
        request = pb.VerifyInstallationRequest(
            product_id=product_id,
            version_id=version_id,
            files=[f.to_pb() for f in files],
            request_id=new_request_id(),
        )
        return (
            await self._connection.call(self._stub.VerifyInstallation, request, timeout=120.0)
        ).verification

    async def versions(self, product_id: str, *, branch: str = "") -> list[pb.ProductVersion]:
        """The product's published versions (of one branch, or all), every page."""
        found, token = [], ""
        while True:
            request = pb.ListProductVersionsRequest(
                product_id=product_id, branch=branch, page_size=200, page_token=token
            )
            page = await self._connection.call(self._stub.ListProductVersions, request)
            found.extend(page.versions)
            token = page.next_page_token
            if not token:
                return found

    async def settings(self) -> pb.DownloadSettings:
        reply = await self._connection.call(self._stub.GetDownloadSettings, pb.GetDownloadSettingsRequest())
        return reply.settings


# -------------------------------------------------------------------- the download WebSocket


def websocket_url(target: str) -> str:
    """`LIBRARY_WS_URL`, else the download socket on the same Envoy edge as the gRPC target."""
    return os.environ.get("LIBRARY_WS_URL") or f"ws://{target}/api/v1/ws/download"


Handler = Callable[[str, dict], Awaitable[None] | None]


class DownloadSocket:
    """Listens on `/api/v1/ws/download` and hands every notification (`type`, `payload`) to `handler`,
    reconnecting with jittered backoff and resuming after the last id seen, so nothing retained is missed.

        async with DownloadSocket(url, token, handler) as socket:
            await socket.ready.wait()   # subscribed: changes made from now on arrive
    The socket is an optimisation for prompt reactions: callers that must not miss a state also read it
    (settings, session status) through the API; `connected` says whether it is up now.
    """

    def __init__(self, url: str, token: str, handler: Handler) -> None:
        self._url = url
        self._token = token
        self._handler = handler
        self._last_id: str | None = None
        self._task: asyncio.Task | None = None
        self.ready = asyncio.Event()
        self.connected = False

    async def __aenter__(self) -> DownloadSocket:
        self._task = asyncio.create_task(self._run(), name="download-socket")
        return self

    async def __aexit__(self, *exc) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        from websockets.asyncio.client import connect  # imported here: only listeners need it

        attempt = 0
        while True:
            try:
                async with connect(
                    self._url,
                    additional_headers={"Authorization": f"Bearer {self._token}"},
                    proxy=None,
                    open_timeout=10,
                ) as ws:
                    if self._last_id is not None:
                        await ws.send(
                            json.dumps({"type": "resume", "id": None, "payload": {"lastId": self._last_id}})
                        )
                    await ws.send(json.dumps({"type": "ping", "id": "subscribed"}))
                    attempt = 0
                    async for raw in ws:
                        await self._dispatch(ws, json.loads(raw))
            except asyncio.CancelledError:
                raise
            except Exception:  # a refused handshake, a dropped connection: try again, with backoff
                pass
            self.connected = False
            await asyncio.sleep(random.uniform(0, min(5.0, 0.2 * 2**attempt)))
            attempt += 1

    async def _dispatch(self, ws, message: dict) -> None:
        kind = message.get("type")
        if kind == "pong":
            self.connected = True
            self.ready.set()
            return
        if kind in (None, "error"):
            return
        if message.get("id"):
            self._last_id = message["id"]
        outcome = self._handler(kind, message.get("payload") or {})
        if asyncio.iscoroutine(outcome):
            await outcome
        if message.get("id"):
            await ws.send(json.dumps({"type": "ack", "id": message["id"]}))
