"""What a download's client held when it started (its held-chunk and kept-file rows, read by its manifest
pages) is pruned by the retention job once the download has ended, completed or cancelled, for the
retention period; active downloads (queued, downloading, paused, failed) keep theirs. The downloads go
through the service over gRPC; the job runs here with a controlled clock, in batches of two rows."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from download.v1 import download_service_pb2 as pb
from download.v1 import download_service_pb2_grpc
from server.core.retention import RetentionJob
from server.core.uow import UnitOfWorkFactory
from server.downloads.retention import download_retention_rules
from tests.support.auth import user_metadata
from tests.support.ownership import grant
from tests.support.versions import publish

S = pb.DownloadSession
HAVE = [b"h" * 3000, b"i" * 2000, b"j" * 1000]  # with also.bin: four chunks held in files on disk
FILES = {"have.bin": HAVE, "also.bin": [b"a" * 500], "lack.bin": [b"l" * 4000]}
KEEP = timedelta(hours=1)


def _on_disk(path: str, chunks: list[bytes]) -> pb.InstalledFile:
    content = b"".join(chunks)
    return pb.InstalledFile(path=path, size_bytes=len(content), sha256=hashlib.sha256(content).hexdigest())


async def _holdings(sessions, download_ids: list[str]) -> dict[str, tuple[int, int]]:
    """(held chunks, kept files) per download."""
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT d, (SELECT count(*) FROM download_session_held_chunks WHERE download_id = d), "
                "(SELECT count(*) FROM download_session_kept_files WHERE download_id = d) "
                "FROM unnest(CAST(:ids AS uuid[])) AS d"
            ),
            {"ids": download_ids},
        )
        return {str(d): (held, kept) for d, held, kept in rows}


async def test_an_ended_downloads_holdings_are_pruned_after_the_period_and_active_ones_kept(
    channel, sessions, settings
):
    stub = download_service_pb2_grpc.DownloadServiceStub(channel)
    user = uuid.uuid4()
    md = user_metadata(user)
    product = uuid.uuid4()
    await grant(sessions, user, product)
    await publish(sessions, product, FILES)
    four_at_once = pb.DownloadSettings(max_concurrent_downloads=4)
    await stub.UpdateDownloadSettings(pb.UpdateDownloadSettingsRequest(settings=four_at_once), metadata=md)
    on_disk = [_on_disk("have.bin", HAVE), _on_disk("also.bin", FILES["also.bin"])]
    started = [
        (
            await stub.StartDownload(
                pb.StartDownloadRequest(
                    product_id=str(product), installation_path=f"/games/{i}", installed_files=on_disk
                ),
                metadata=md,
            )
        ).download
        for i in range(5)
    ]
    completed, cancelled, failed, paused, downloading = (s.download_id for s in started)
    await stub.ReportDownloadProgress(
        pb.ReportDownloadProgressRequest(
            download_id=completed, downloaded_bytes=started[0].total_size_bytes, status=S.COMPLETED
        ),
        metadata=md,
    )
    await stub.CancelDownload(pb.CancelDownloadRequest(download_id=cancelled), metadata=md)
    await stub.ReportDownloadProgress(
        pb.ReportDownloadProgressRequest(download_id=failed, downloaded_bytes=0, status=S.FAILED), metadata=md
    )
    await stub.PauseDownload(pb.PauseDownloadRequest(download_id=paused), metadata=md)
    listed = await stub.ListDownloads(pb.ListDownloadsRequest(page_size=10), metadata=md)
    assert {d.download_id: d.status for d in listed.downloads} == {
        completed: S.COMPLETED,
        cancelled: S.CANCELLED,
        failed: S.FAILED,
        paused: S.PAUSED,
        downloading: S.DOWNLOADING,
    }
    ids = [completed, cancelled, failed, paused, downloading]
    assert await _holdings(sessions, ids) == dict.fromkeys(ids, (4, 2))

    rules = download_retention_rules(dataclasses.replace(settings, download_holdings_retention_seconds=3600))
    now = datetime.now(UTC)
    uow = UnitOfWorkFactory(sessions, "/test", lambda: None)
    await RetentionJob(uow, rules, lambda: now, batch_size=2).prune(now)  # ended just now: kept
    assert await _holdings(sessions, ids) == dict.fromkeys(ids, (4, 2))

    later = now + KEEP + timedelta(minutes=1)
    pruned = await RetentionJob(uow, rules, lambda: later, batch_size=2).prune(later)
    assert pruned["download_session_held_chunks"] >= 8 and pruned["download_session_kept_files"] >= 4
    assert await _holdings(sessions, ids) == {
        completed: (0, 0),
        cancelled: (0, 0),
        failed: (4, 2),
        paused: (4, 2),
        downloading: (4, 2),
    }
