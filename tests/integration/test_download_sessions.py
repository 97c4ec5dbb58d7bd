"""Download sessions and the queue over native gRPC against the real stack (PostgreSQL, Redis, Kafka):
ownership, totals over what the client has, the state machine and max_concurrent_downloads under
concurrent calls, promotion in the transaction that freed the slot, progress in Redis only, completion,
revocation, and another user's downloads out of reach. Versions are inserted as a publication leaves
them (tests.support.versions); every test uses fresh users and products."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import event, select, text

from download.v1 import download_service_pb2 as pb
from download.v1 import download_service_pb2_grpc
from library.v1 import library_service_pb2 as lpb
from library.v1 import library_service_pb2_grpc
from server.core.db import create_engine, create_sessionmaker
from server.core.deps import Deps
from server.core.errors import NotFound, RateLimited
from server.core.events.cloudevents import DOWNLOAD_EVENTS_TOPIC
from server.core.rate_limit import RateLimiter, parse_limits
from server.core.s3 import ObjectStore
from server.core.uow import UnitOfWorkFactory, notification_stream
from server.downloads import progress
from server.downloads import session_rules as rules
from server.downloads.session_tables import DownloadSession, UpdateHistory
from server.downloads.session_views import FileReport, ProgressReport
from server.downloads.sessions import DownloadSessions
from server.library.tables import LibraryItem
from tests.support.auth import service_metadata, user_metadata
from tests.support.grpc_errors import failure
from tests.support.kafka import TopicReader, about, assert_cloud_event
from tests.support.ownership import grant
from tests.support.versions import Published, compressed_size, publish
from tests.support.waiting import wait_until

S = pb.DownloadSession
STATUS_CHANGED = "com.platform.download.session.status.changed.v1"
ITEM_CHANGED = "com.platform.download.item.status.changed.v1"
CHUNK = [b"a" * 4000, b"b" * 3000]


@pytest.fixture
def downloads(channel) -> download_service_pb2_grpc.DownloadServiceStub:
    return download_service_pb2_grpc.DownloadServiceStub(channel)


async def owned_game(sessions, user: uuid.UUID, files=None) -> tuple[uuid.UUID, Published]:
    """A fresh product the user owns, with one published version."""
    product = uuid.uuid4()
    await grant(sessions, user, product)
    return product, await publish(
        sessions, product, files or {"bin/game.exe": CHUNK, "data/a.pak": [b"c" * 5000]}
    )


async def start(stub, user, product, *, priority=0, **kw) -> pb.DownloadSession:
    request = pb.StartDownloadRequest(
        product_id=str(product), installation_path="/games/x", priority=priority, **kw
    )
    return (await stub.StartDownload(request, metadata=user_metadata(user))).download


async def statuses(stub, user) -> dict[str, int]:
    listed = await stub.ListDownloads(pb.ListDownloadsRequest(page_size=200), metadata=user_metadata(user))
    return {d.download_id: d.status for d in listed.downloads}


async def set_max_concurrent(stub, user, n: int) -> None:
    await stub.UpdateDownloadSettings(
        pb.UpdateDownloadSettingsRequest(settings=pb.DownloadSettings(max_concurrent_downloads=n)),
        metadata=user_metadata(user),
    )


async def report(stub, user, download_id, downloaded, **kw) -> pb.ReportDownloadProgressResponse:
    return await stub.ReportDownloadProgress(
        pb.ReportDownloadProgressRequest(download_id=download_id, downloaded_bytes=downloaded, **kw),
        metadata=user_metadata(user),
    )


async def test_start_counts_the_versions_chunks_and_needs_ownership(downloads, sessions):
    user = uuid.uuid4()
    product, version = await owned_game(sessions, user)
    started = await start(downloads, user, product, device_id="pc-1")
    assert started.status == S.DOWNLOADING  # a free slot
    assert started.version_id == str(version.version_id) and started.branch == "public"
    assert started.total_size_bytes == version.download_bytes and started.downloaded_bytes == 0
    assert started.device_id == "pc-1" and started.installation_path == "/games/x"

    stranger_game = uuid.uuid4()
    await publish(sessions, stranger_game, {"a": [b"x" * 10]})
    code, reason, _ = await failure(start(downloads, user, stranger_game))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PRODUCT_ACCESS_DENIED")
    unpublished = uuid.uuid4()
    await grant(sessions, user, unpublished)
    code, reason, _ = await failure(start(downloads, user, unpublished))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "PRODUCT_VERSION_NOT_FOUND")
    code, reason, fields = await failure(start(downloads, user, product, priority=101))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["priority"])


async def test_totals_count_only_what_the_installed_version_lacks_and_an_older_version_is_a_rollback(
    downloads, sessions
):
    user = uuid.uuid4()
    product, v1 = await owned_game(sessions, user, {"big.bin": [b"1" * 6000, b"2" * 6000, b"3" * 6000]})
    v2 = await publish(sessions, product, {"big.bin": [b"1" * 6000, b"X" * 6000, b"3" * 6000]})
    update = await start(downloads, user, product, installed_version_id=str(v1.version_id))
    assert update.version_id == str(v2.version_id)  # the latest of the branch
    assert update.total_size_bytes == 3000 and update.installed_version_id == str(v1.version_id)
    rollback = await start(
        downloads, user, product, version_id=str(v1.version_id), installed_version_id=str(v2.version_id)
    )
    assert rollback.version_id == str(v1.version_id) and rollback.total_size_bytes == 3000
    code, reason, fields = await failure(
        start(downloads, user, product, installed_version_id=str(uuid.uuid4()))
    )
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ["installed_version_id"],
    )


async def test_totals_skip_the_chunks_of_files_already_on_disk(downloads, sessions):
    user = uuid.uuid4()
    have, lack = [b"h" * 6000, b"i" * 2000], [b"l" * 4000]
    product, _ = await owned_game(sessions, user, {"have.bin": have, "lack.bin": lack})
    on_disk = pb.InstalledFile(
        path="have.bin", size_bytes=8000, sha256=hashlib.sha256(b"".join(have)).hexdigest()
    )
    started = await start(downloads, user, product, installed_files=[on_disk])
    assert started.total_size_bytes == compressed_size(lack[0])


async def test_the_manifest_honours_the_files_on_disk_as_the_totals_do(downloads, sessions):
    """A file on disk at its path with its content is not written; one whose content is on disk at
    another path is written, from chunks that need no download; what the client lacks is both."""
    user = uuid.uuid4()
    kept, moved, lack = [b"k" * 5000], [b"m" * 3000, b"n" * 1000], [b"l" * 4000, b"m" * 3000]
    product, _ = await owned_game(sessions, user, {"kept.bin": kept, "moved.bin": moved, "lack.bin": lack})
    on_disk = [
        pb.InstalledFile(path=path, size_bytes=len(content), sha256=hashlib.sha256(content).hexdigest())
        for path, content in (("kept.bin", b"".join(kept)), ("old/moved.bin", b"".join(moved)))
    ]
    started = await start(downloads, user, product, installed_files=on_disk)
    assert started.total_size_bytes == compressed_size(lack[0])

    page = await downloads.GetDownloadManifest(
        pb.GetDownloadManifestRequest(download_id=started.download_id), metadata=user_metadata(user)
    )
    files = {f.path: f for f in page.files}
    assert {path: f.write_required for path, f in files.items()} == {
        "kept.bin": False,
        "moved.bin": True,
        "lack.bin": True,
    }
    needed = {c.chunk_hash for f in page.files for c in f.chunks if c.download_required}
    assert needed == {hashlib.sha256(lack[0]).hexdigest()}
    assert sum(c.compressed_size_bytes for f in page.files for c in f.chunks if c.chunk_hash in needed) == (
        started.total_size_bytes
    )


async def test_the_queue_holds_max_concurrent_and_promotes_by_priority_then_age(downloads, sessions):
    user = uuid.uuid4()
    await set_max_concurrent(downloads, user, 2)
    games = [(await owned_game(sessions, user))[0] for _ in range(5)]
    first = await start(downloads, user, games[0])
    second = await start(downloads, user, games[1])
    low_old = await start(downloads, user, games[2], priority=10)
    high = await start(downloads, user, games[3], priority=50)
    low_new = await start(downloads, user, games[4], priority=10)
    assert [first.status, second.status] == [S.DOWNLOADING, S.DOWNLOADING]
    assert [low_old.status, high.status, low_new.status] == [S.QUEUED] * 3

    cancelled = await downloads.CancelDownload(
        pb.CancelDownloadRequest(download_id=first.download_id), metadata=user_metadata(user)
    )
    assert cancelled.download.status == S.CANCELLED
    now = await statuses(downloads, user)
    assert now[high.download_id] == S.DOWNLOADING  # promoted by the same call
    assert now[low_old.download_id] == now[low_new.download_id] == S.QUEUED

    await downloads.PauseDownload(
        pb.PauseDownloadRequest(download_id=second.download_id), metadata=user_metadata(user)
    )
    now = await statuses(downloads, user)
    assert now[low_old.download_id] == S.DOWNLOADING and now[low_new.download_id] == S.QUEUED  # older first

    # reprioritizing reorders the line; resuming a paused one queues it behind by priority
    await downloads.ReprioritizeDownload(
        pb.ReprioritizeDownloadRequest(download_id=low_new.download_id, priority=90),
        metadata=user_metadata(user),
    )
    resumed = await downloads.ResumeDownload(
        pb.ResumeDownloadRequest(download_id=second.download_id), metadata=user_metadata(user)
    )
    assert resumed.download.status == S.QUEUED
    await downloads.PauseDownload(
        pb.PauseDownloadRequest(download_id=high.download_id), metadata=user_metadata(user)
    )
    now = await statuses(downloads, user)
    assert now[low_new.download_id] == S.DOWNLOADING and now[second.download_id] == S.QUEUED


async def test_the_freed_slot_is_filled_in_the_transaction_that_freed_it(downloads, sessions):
    user = uuid.uuid4()
    await set_max_concurrent(downloads, user, 1)
    a, b = [(await owned_game(sessions, user))[0] for _ in range(2)]
    running = await start(downloads, user, a)
    waiting = await start(downloads, user, b)
    await downloads.CancelDownload(
        pb.CancelDownloadRequest(download_id=running.download_id), metadata=user_metadata(user)
    )
    async with sessions() as session:
        rows = (
            await session.execute(
                select(
                    DownloadSession.id, DownloadSession.status, text("download_sessions.xmin::text")
                ).where(DownloadSession.user_id == user)
            )
        ).all()
    by_id = {str(r[0]): (r[1], r[2]) for r in rows}
    assert by_id[running.download_id][0] == "cancelled" and by_id[waiting.download_id][0] == "downloading"
    assert by_id[running.download_id][1] == by_id[waiting.download_id][1]  # one writing transaction


async def test_concurrent_starts_and_changes_never_exceed_max_concurrent(downloads, sessions):
    user = uuid.uuid4()
    await set_max_concurrent(downloads, user, 3)
    games = [(await owned_game(sessions, user))[0] for _ in range(12)]
    started = await asyncio.gather(*(start(downloads, user, g) for g in games))
    assert sum(1 for s in started if s.status == S.DOWNLOADING) == 3

    # cancel, pause and resume at once, in every order the server interleaves them
    ids = [s.download_id for s in started]
    md = user_metadata(user)
    await asyncio.gather(
        *(downloads.CancelDownload(pb.CancelDownloadRequest(download_id=i), metadata=md) for i in ids[:3]),
        *(downloads.PauseDownload(pb.PauseDownloadRequest(download_id=i), metadata=md) for i in ids[3:6]),
        return_exceptions=True,
    )
    await asyncio.gather(
        *(downloads.ResumeDownload(pb.ResumeDownloadRequest(download_id=i), metadata=md) for i in ids[3:6]),
        return_exceptions=True,
    )
    now = await statuses(downloads, user)
    assert sum(1 for s in now.values() if s == S.DOWNLOADING) == 3
    assert sum(1 for s in now.values() if s == S.CANCELLED) == 3
    assert all(now[i] in (S.DOWNLOADING, S.QUEUED, S.PAUSED) for i in ids[3:])


async def test_illegal_transitions_are_failed_precondition_and_change_nothing(downloads, sessions):
    user = uuid.uuid4()
    product, _ = await owned_game(sessions, user)
    s = await start(downloads, user, product)
    md = user_metadata(user)
    code, reason, _ = await failure(
        downloads.ResumeDownload(pb.ResumeDownloadRequest(download_id=s.download_id), metadata=md)
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE_TRANSITION")
    await downloads.CancelDownload(pb.CancelDownloadRequest(download_id=s.download_id), metadata=md)
    for call in (
        downloads.PauseDownload(pb.PauseDownloadRequest(download_id=s.download_id), metadata=md),
        downloads.CancelDownload(pb.CancelDownloadRequest(download_id=s.download_id), metadata=md),
        downloads.ReprioritizeDownload(
            pb.ReprioritizeDownloadRequest(download_id=s.download_id, priority=5), metadata=md
        ),
        report(downloads, user, s.download_id, 0, status=S.COMPLETED),
    ):
        code, reason, _ = await failure(call)
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE_TRANSITION")
    got = await downloads.GetDownload(pb.GetDownloadRequest(download_id=s.download_id), metadata=md)
    assert got.download.status == S.CANCELLED and got.download.priority == 0


async def test_a_replayed_start_returns_the_first_session(downloads, sessions):
    user = uuid.uuid4()
    product, _ = await owned_game(sessions, user)
    request_id = str(uuid.uuid4())
    first, again = [await start(downloads, user, product, request_id=request_id) for _ in range(2)]
    assert first == again
    assert len(await statuses(downloads, user)) == 1


async def test_progress_is_smoothed_and_a_report_beyond_the_total_or_negative_is_refused(downloads, sessions):
    user = uuid.uuid4()
    product, version = await owned_game(sessions, user)
    s = await start(downloads, user, product)
    first = await report(downloads, user, s.download_id, 1000)
    assert first.status == S.DOWNLOADING and not first.HasField("eta_seconds")
    await asyncio.sleep(0.3)
    second = await report(downloads, user, s.download_id, 2000)
    assert second.speed_bytes_per_second > 0 and second.HasField("eta_seconds")
    assert second.progress_percentage == pytest.approx(2000 * 100 / version.download_bytes)
    got = (
        await downloads.GetDownload(
            pb.GetDownloadRequest(download_id=s.download_id), metadata=user_metadata(user)
        )
    ).download
    assert got.downloaded_bytes == 2000 and got.speed_bytes_per_second == second.speed_bytes_per_second

    code, reason, fields = await failure(report(downloads, user, s.download_id, version.download_bytes + 1))
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ["downloaded_bytes"],
    )
    code, reason, fields = await failure(report(downloads, user, s.download_id, -1))
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ["downloaded_bytes"],
    )


async def test_completion_writes_history_installs_the_item_promotes_the_queue_and_emits_events(
    downloads, sessions, settings, redis
):
    user = uuid.uuid4()
    await set_max_concurrent(downloads, user, 1)
    product, version = await owned_game(sessions, user)
    other, _ = await owned_game(sessions, user)
    s = await start(downloads, user, product)
    waiting = await start(downloads, user, other)
    await report(
        downloads,
        user,
        s.download_id,
        100,
        files=[pb.DownloadFileReport(path="bin/game.exe", status=pb.DownloadFileReport.COMPLETED)],
    )
    # reported again (a retry): no second event
    await report(
        downloads,
        user,
        s.download_id,
        200,
        files=[pb.DownloadFileReport(path="bin/game.exe", status=pb.DownloadFileReport.COMPLETED)],
    )
    done = await report(
        downloads,
        user,
        s.download_id,
        version.download_bytes,
        status=S.COMPLETED,
        files=[
            pb.DownloadFileReport(
                path="data/a.pak", status=pb.DownloadFileReport.FAILED, error_message="disk full"
            ),
        ],
    )
    assert done.status == S.COMPLETED and done.progress_percentage == 100
    again = await report(downloads, user, s.download_id, version.download_bytes, status=S.COMPLETED)
    assert again.status == S.COMPLETED  # a retried completion changes nothing
    assert (await statuses(downloads, user))[waiting.download_id] == S.DOWNLOADING

    async with sessions() as session:
        item = await session.scalar(
            select(LibraryItem).where(LibraryItem.user_id == user, LibraryItem.product_id == product)
        )
        history = (await session.scalars(select(UpdateHistory).where(UpdateHistory.user_id == user))).all()
    assert item.installation_status == "installed" and item.installed_version_id == version.version_id
    assert [(h.status, h.applied_version_id, h.download_session_id) for h in history] == [
        ("success", version.version_id, uuid.UUID(s.download_id))
    ]

    async with TopicReader(settings.kafka_bootstrap_servers, DOWNLOAD_EVENTS_TOPIC) as reader:
        # the last change of this test, as the sentinel: everything before it was relayed already
        await reader.wait_for(
            lambda e: (
                about(user, STATUS_CHANGED)(e)
                and e["data"]["downloadSessionId"] == waiting.download_id
                and e["data"]["newStatus"] == "downloading"
            )
        )
        events = reader.matching(about(user))
    for e in events:
        assert_cloud_event(e)
    changes = [
        (e["data"]["downloadSessionId"], e["data"]["previousStatus"], e["data"]["newStatus"])
        for e in events
        if e["type"] == STATUS_CHANGED
    ]
    assert changes == [
        (s.download_id, None, "downloading"),
        (waiting.download_id, None, "queued"),
        (s.download_id, "downloading", "completed"),
        (waiting.download_id, "queued", "downloading"),
    ]
    completed = next(
        e for e in events if e["type"] == STATUS_CHANGED and e["data"]["newStatus"] == "completed"
    )
    assert completed["data"] == {
        "downloadSessionId": s.download_id,
        "userId": str(user),
        "productId": str(product),
        "versionId": str(version.version_id),
        "newStatus": "completed",
        "previousStatus": "downloading",
        "downloadedBytes": version.download_bytes,
        "totalSizeBytes": version.download_bytes,
        "timestamp": completed["data"]["timestamp"],
        "errorDetails": None,
    }
    items = [e["data"] for e in events if e["type"] == ITEM_CHANGED]
    assert [(i["relativePath"], i["newStatus"], i["previousStatus"], i["errorDetails"]) for i in items] == [
        ("bin/game.exe", "completed", "downloading", None),
        ("data/a.pak", "failed", "downloading", "disk full"),
    ]
    assert items[0]["fileMetadataId"] == str(version.file_ids["bin/game.exe"])
    assert items[0]["downloadedBytes"] == items[0]["totalFileSizeBytes"] == version.sizes["bin/game.exe"]
    assert items[0]["downloadItemId"] == str(uuid.uuid5(uuid.UUID(s.download_id), "bin/game.exe"))

    notes = [
        json.loads(f[b"payload"]) | {"type": f[b"type"].decode()}
        for _, f in await redis.xrange(notification_stream(user))
    ]
    changed = [
        (n["downloadSessionId"], n["newStatus"]) for n in notes if n["type"] == "downloadStatusChanged"
    ]
    assert (s.download_id, "completed") in changed and (waiting.download_id, "downloading") in changed


async def test_a_file_outside_the_version_is_refused(downloads, sessions):
    user = uuid.uuid4()
    product, _ = await owned_game(sessions, user)
    s = await start(downloads, user, product)
    code, reason, fields = await failure(
        report(
            downloads, user, s.download_id, 0, files=[pb.DownloadFileReport(path="../etc/passwd", status=1)]
        )
    )
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ["files[0].path"],
    )


async def test_another_users_downloads_are_not_found(downloads, sessions):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    product, _ = await owned_game(sessions, alice)
    s = await start(downloads, alice, product)
    bob_md = user_metadata(bob)
    for call in (
        downloads.GetDownload(pb.GetDownloadRequest(download_id=s.download_id), metadata=bob_md),
        downloads.PauseDownload(pb.PauseDownloadRequest(download_id=s.download_id), metadata=bob_md),
        downloads.CancelDownload(pb.CancelDownloadRequest(download_id=s.download_id), metadata=bob_md),
        downloads.ReprioritizeDownload(
            pb.ReprioritizeDownloadRequest(download_id=s.download_id, priority=1), metadata=bob_md
        ),
        report(downloads, bob, s.download_id, 10),
        report(downloads, bob, s.download_id, 10, status=S.COMPLETED),
    ):
        code, reason, _ = await failure(call)
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "DOWNLOAD_NOT_FOUND")
    assert await statuses(downloads, bob) == {}
    got = await downloads.GetDownload(
        pb.GetDownloadRequest(download_id=s.download_id), metadata=user_metadata(alice)
    )
    assert got.download.status == S.DOWNLOADING and got.download.downloaded_bytes == 0


async def test_list_pages_newest_first_and_filters(downloads, sessions):
    user = uuid.uuid4()
    games = [(await owned_game(sessions, user))[0] for _ in range(5)]
    started = [await start(downloads, user, g) for g in games]
    md = user_metadata(user)
    seen, token = [], ""
    while True:
        page = await downloads.ListDownloads(
            pb.ListDownloadsRequest(page_size=2, page_token=token), metadata=md
        )
        assert page.total_size == 5
        seen += [d.download_id for d in page.downloads]
        if not (token := page.next_page_token):
            break
    assert seen == [s.download_id for s in reversed(started)]
    queued = await downloads.ListDownloads(pb.ListDownloadsRequest(status=[S.QUEUED]), metadata=md)
    assert [d.download_id for d in queued.downloads] == [s.download_id for s in reversed(started[3:])]
    code, reason, _ = await failure(
        downloads.ListDownloads(pb.ListDownloadsRequest(page_size=-1), metadata=md)
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")


async def test_a_revoked_entitlement_cancels_the_products_downloads(downloads, channel, sessions):
    user = uuid.uuid4()
    await set_max_concurrent(downloads, user, 1)
    product, _ = await owned_game(sessions, user)
    other, _ = await owned_game(sessions, user)
    running = await start(downloads, user, product)
    waiting = await start(downloads, user, other)
    library = library_service_pb2_grpc.LibraryServiceStub(channel)
    await library.RevokeEntitlement(
        lpb.RevokeEntitlementRequest(
            user_id=str(user), product_id=str(product), reason=lpb.RevokeEntitlementRequest.REFUND
        ),
        metadata=service_metadata(),
    )

    async def cancelled() -> bool:
        return (await statuses(downloads, user))[running.download_id] == S.CANCELLED

    await wait_until(cancelled, what="the revoked product's download to be cancelled")
    assert (await statuses(downloads, user))[waiting.download_id] == S.DOWNLOADING
    progress = await report(downloads, user, running.download_id, 10)
    assert progress.status == S.CANCELLED  # the client is told to stop


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@contextlib.asynccontextmanager
async def use_cases_with(settings, redis):
    """The use cases in this process with `settings`, a controlled clock, and every SQL statement they
    send."""
    engine = create_engine(settings.database_url, pool_size=2)
    clock = Clock()
    limiter = RateLimiter(redis, parse_limits(settings.rate_limits), clock)
    deps = Deps(
        settings,
        UnitOfWorkFactory(create_sessionmaker(engine), "/test", lambda: None),
        redis,
        ObjectStore(settings),  # never opened: sessions do not touch S3
        clock,
        limiter,
    )
    statements: list[str] = []
    event.listen(
        engine.sync_engine, "before_cursor_execute", lambda c, cur, stmt, *a: statements.append(stmt)
    )
    try:
        yield DownloadSessions(deps), clock, statements
    finally:
        limiter.close()
        await engine.dispose()


@pytest.fixture
async def in_process(settings, redis):
    async with use_cases_with(settings, redis) as made:
        yield made


async def test_progress_reports_touch_no_database_and_notify_at_most_once_a_second(
    in_process, sessions, redis, downloads
):
    use_cases, clock, statements = in_process
    user = uuid.uuid4()
    product, version = await owned_game(sessions, user, {"f": [b"q" * 100_000]})
    s = await start(downloads, user, product)
    download_id = uuid.UUID(s.download_id)
    await use_cases.report(user, download_id, ProgressReport(0, "downloading"))  # live state seeded
    statements.clear()
    sent_at = []
    for step in range(40):  # 4 s of reports every 100 ms, 1000 bytes each
        clock.now += timedelta(milliseconds=100)
        progress = await use_cases.report(user, download_id, ProgressReport(1000 * (step + 1), "downloading"))
        sent_at.append(clock.now)
    assert statements == []
    assert progress.speed_bytes_per_second == pytest.approx(10_000, rel=0.01)
    assert progress.eta_seconds == -(-(version.download_bytes - 40_000) // progress.speed_bytes_per_second)

    entries = await redis.xrange(notification_stream(user))
    notes = [json.loads(f[b"payload"]) for _, f in entries if f[b"type"] == b"downloadProgress"]
    # the seeding report at t0 and then one per full second: t0+1s, +2s, +3s, +4s
    assert [n["downloadedBytes"] for n in notes] == [0, 10_000, 20_000, 30_000, 40_000]
    assert notes[-1]["downloadId"] == s.download_id and notes[-1]["productId"] == str(product)
    assert notes[-1]["totalSizeBytes"] == version.download_bytes
    async with sessions() as session:
        row = await session.scalar(select(DownloadSession).where(DownloadSession.id == download_id))
    assert row.downloaded_bytes == 0  # Postgres learns the bytes at the next transition only


async def test_each_report_counts_once_against_the_users_rate_limit_and_a_refused_one_does_nothing(
    settings, redis, sessions, downloads
):
    """Plain reports count inside their own Redis script (no second round trip), reports with files or a
    final status before anything is done; a re-seeded report is not counted twice."""
    tight = dataclasses.replace(settings, rate_limits="DownloadService/ReportDownloadProgress=3/60")
    async with use_cases_with(tight, redis) as (use_cases, clock, _):
        user = uuid.uuid4()
        product, version = await owned_game(sessions, user)
        download_id = uuid.UUID((await start(downloads, user, product)).download_id)
        exe = [FileReport("bin/game.exe", True)]
        for n in (1, 2, 3):  # the burst
            await use_cases.report(user, download_id, ProgressReport(n * 100, "downloading"))
        for refused in (
            ProgressReport(400, "downloading"),
            ProgressReport(400, "downloading", files=exe),
            ProgressReport(version.download_bytes, "completed"),
        ):
            with pytest.raises(RateLimited) as limited:
                await use_cases.report(user, download_id, refused)
            assert limited.value.retry_after_seconds == 20  # one slot per 60/3 s
        live = (await use_cases.live.get_many(user, [download_id]))[download_id]
        assert (live.status, live.downloaded) == ("downloading", 300)  # the refused ones left no trace
        assert await use_cases.live.unseen_files(user, download_id, ["completed:bin/game.exe"])

        clock.now += timedelta(seconds=20)  # one slot: a report with a file takes it, once
        await use_cases.report(user, download_id, ProgressReport(500, "downloading", files=exe))
        assert not await use_cases.live.unseen_files(user, download_id, ["completed:bin/game.exe"])
        with pytest.raises(RateLimited):
            await use_cases.report(user, download_id, ProgressReport(500, "downloading"))
        clock.now += timedelta(seconds=20)
        await redis.delete(progress._key(user, download_id))  # the live state lost: re-seeded from the row
        assert (await use_cases.report(user, download_id, ProgressReport(600, "downloading"))).status == (
            "downloading"
        )
        with pytest.raises(RateLimited):
            await use_cases.report(user, download_id, ProgressReport(600, "downloading"))
        clock.now += timedelta(seconds=20)  # the seeding and its retry counted once
        await use_cases.report(user, download_id, ProgressReport(700, "downloading"))
        other = uuid.uuid4()  # another user's budget is their own
        with pytest.raises(NotFound):
            await use_cases.report(other, download_id, ProgressReport(1, "downloading"))


async def test_the_progress_script_smooths_exactly_as_the_rules_do(in_process, sessions, downloads):
    use_cases, clock, _ = in_process
    user = uuid.uuid4()
    product, _ = await owned_game(sessions, user, {"f": [b"s" * 400_000]})
    download_id = uuid.UUID((await start(downloads, user, product)).download_id)
    steps = [(0, 0), (250, 4_000), (250, 9_000), (1_700, 30_000), (0, 31_000), (400, 20_000), (90, 60_000)]
    expected = None
    for dt_ms, downloaded in steps:
        clock.now += timedelta(milliseconds=dt_ms)
        progress = await use_cases.report(user, download_id, ProgressReport(downloaded, "downloading"))
        expected = rules.smooth(expected, rules.epoch_ms(clock.now), downloaded)
        assert progress.speed_bytes_per_second == int(expected.speed), (dt_ms, downloaded)
        assert progress.eta_seconds == rules.eta_seconds(downloaded, 200_000, expected.speed)


async def test_a_stalled_download_has_no_eta_rather_than_one_beyond_the_contract(
    in_process, sessions, redis, downloads
):
    """The smoothed speed of a download that stops moving decays towards 0 with every report; the ETA it
    gives (remaining / speed) soon leaves the contract's int32 and then overflows a float. Past that point
    the ETA is unknown (None) in the answer, the session's view and the notification, never an error."""
    use_cases, clock, _ = in_process
    user = uuid.uuid4()
    product, version = await owned_game(sessions, user)
    s = await start(downloads, user, product)
    download_id = uuid.UUID(s.download_id)
    half = version.download_bytes // 2
    await use_cases.report(user, download_id, ProgressReport(0, "downloading"))
    clock.now += timedelta(seconds=1)
    moving = await use_cases.report(user, download_id, ProgressReport(half, "downloading"))
    assert moving.speed_bytes_per_second == half and moving.eta_seconds in (1, 2)
    for _ in range(80):  # stalled for 40 minutes, a report every 30 s
        clock.now += timedelta(seconds=30)
        stalled = await use_cases.report(user, download_id, ProgressReport(half, "downloading"))
    assert (stalled.speed_bytes_per_second, stalled.eta_seconds) == (0, None)
    reported = await report(downloads, user, s.download_id, half)  # the server's own clock: later still
    assert not reported.HasField("eta_seconds") and reported.speed_bytes_per_second == 0
    request = pb.GetDownloadRequest(download_id=s.download_id)
    got = (await downloads.GetDownload(request, metadata=user_metadata(user))).download
    assert not got.HasField("eta_seconds") and got.downloaded_bytes == half
    entries = await redis.xrange(notification_stream(user))
    last = json.loads([f for _, f in entries if f[b"type"] == b"downloadProgress"][-1][b"payload"])
    assert last["etaSeconds"] is None and last["downloadedBytes"] == half
    assert rules.eta_seconds(0, 10**12, 1e-320) is None and rules.eta_seconds(0, 2**31, 1.0) is None


async def test_live_progress_is_folded_into_the_row_at_the_next_transition(in_process, sessions, downloads):
    use_cases, _, _ = in_process
    user = uuid.uuid4()
    product, _ = await owned_game(sessions, user)
    s = await start(downloads, user, product)
    download_id = uuid.UUID(s.download_id)
    await use_cases.report(user, download_id, ProgressReport(1234, "downloading"))
    paused = await use_cases.pause(user, download_id, None)
    assert paused.status == "paused" and paused.downloaded_bytes == 1234
    async with sessions() as session:
        row = await session.scalar(select(DownloadSession).where(DownloadSession.id == download_id))
    assert row.status == "paused" and row.downloaded_bytes == 1234


def window(start: datetime, hours: int) -> pb.DownloadSchedule:
    end = start + timedelta(hours=hours)
    return pb.DownloadSchedule(
        start_time=start.strftime("%H:%M"), end_time=end.strftime("%H:%M"), time_zone="UTC"
    )


async def test_outside_the_schedule_window_sessions_wait_unless_started_now(downloads, sessions, in_process):
    use_cases, clock, _ = in_process
    user = uuid.uuid4()
    md = user_metadata(user)
    now = datetime.now(UTC)
    later = await downloads.UpdateDownloadSettings(
        pb.UpdateDownloadSettingsRequest(
            settings=pb.DownloadSettings(schedule=window(now + timedelta(hours=2), 2))
        ),
        metadata=md,
    )
    a, b = [(await owned_game(sessions, user))[0] for _ in range(2)]
    waiting = await start(downloads, user, a)
    assert waiting.status == S.QUEUED  # slots are free, but not now
    urgent = await start(downloads, user, b, start_now=True)
    assert urgent.status == S.DOWNLOADING and urgent.start_now

    # the window opens: the promoter starts what waits
    await downloads.UpdateDownloadSettings(
        pb.UpdateDownloadSettingsRequest(
            settings=pb.DownloadSettings(
                schedule=window(now - timedelta(hours=1), 3), etag=later.settings.etag
            )
        ),
        metadata=md,
    )
    clock.now = datetime.now(UTC)
    await use_cases.promote_waiting()
    assert (await statuses(downloads, user))[waiting.download_id] == S.DOWNLOADING


async def test_the_users_branch_picks_the_version(downloads, sessions):
    user = uuid.uuid4()
    product, public = await owned_game(sessions, user)
    beta = await publish(sessions, product, {"bin/game.exe": [b"beta" * 100]}, branch="beta")
    assert (await start(downloads, user, product)).version_id == str(public.version_id)
    await downloads.UpdateDownloadSettings(
        pb.UpdateDownloadSettingsRequest(
            settings=pb.DownloadSettings(
                product_branches=[pb.ProductBranch(product_id=str(product), branch="beta")]
            )
        ),
        metadata=user_metadata(user),
    )
    on_beta = await start(downloads, user, product)
    assert on_beta.version_id == str(beta.version_id) and on_beta.branch == "beta"
