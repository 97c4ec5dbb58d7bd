"""DownloadService's settings over native gRPC against the real stack (PostgreSQL, Redis, the outbox
relay), and get_download_settings as the queue and the catalog read it inside their own transaction.

"No notification" is checked against a sentinel: a later successful write's notification must be next.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, time, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2

from download.v1 import download_service_pb2 as pb
from download.v1 import download_service_pb2_grpc
from server.downloads.settings import get_download_settings
from server.downloads.settings_rules import DownloadSettings, ScheduleWindow, branch_for
from server.downloads.settings_tables import DownloadSettingsRow
from tests.support.achievements import wait_notifications
from tests.support.auth import user_metadata
from tests.support.grpc_errors import failure
from tests.support.ownership import grant
from tests.support.versions import publish

UPDATED = "downloadSettingsUpdated"


@pytest.fixture
def downloads(channel) -> download_service_pb2_grpc.DownloadServiceStub:
    return download_service_pb2_grpc.DownloadServiceStub(channel)


async def get(stub, user: uuid.UUID) -> pb.DownloadSettings:
    reply = await stub.GetDownloadSettings(pb.GetDownloadSettingsRequest(), metadata=user_metadata(user))
    return reply.settings


def update(
    stub, user: uuid.UUID, *, mask: tuple[str, ...] = (), device_id: str = "", request_id: str = "", **fields
):
    """UpdateDownloadSettings as `user` (an awaitable); `fields` are DownloadSettings fields."""
    return stub.UpdateDownloadSettings(
        pb.UpdateDownloadSettingsRequest(
            settings=pb.DownloadSettings(**fields),
            update_mask=field_mask_pb2.FieldMask(paths=list(mask)),
            device_id=device_id,
            request_id=request_id,
        ),
        metadata=user_metadata(user),
    )


def schedule(start: str, end: str, zone: str = "Europe/Berlin") -> pb.DownloadSchedule:
    return pb.DownloadSchedule(start_time=start, end_time=end, time_zone=zone)


def branches(settings: pb.DownloadSettings) -> dict[str, str]:
    return {b.product_id: b.branch for b in settings.product_branches}


async def on_branches(sessions, product: uuid.UUID, *branches: str) -> None:
    """A tiny committed version of the product on each branch, so that the branch can be chosen."""
    for branch in branches:
        await publish(sessions, product, {"game.txt": [f"{product} {branch}".encode()]}, branch=branch)


async def row_count(sessions, user: uuid.UUID) -> int:
    async with sessions() as session:
        return 0 if await session.get(DownloadSettingsRow, user) is None else 1


async def test_a_user_who_never_changed_them_gets_the_defaults_and_nothing_is_stored(downloads, sessions):
    user = uuid.uuid4()

    settings = await get(downloads, user)

    assert (settings.max_concurrent_downloads, settings.bandwidth_limit_kbps, settings.etag) == (3, 0, "v0")
    assert settings.HasField("max_concurrent_downloads") and settings.HasField("bandwidth_limit_kbps")
    assert not settings.HasField("schedule")
    assert not settings.HasField("updated_at")
    assert list(settings.product_branches) == []
    assert await row_count(sessions, user) == 0
    async with sessions() as session:
        assert await get_download_settings(session, user) == DownloadSettings()


async def test_an_update_changes_what_it_sets_and_notifies_the_devices(downloads, sessions, redis):
    user, game = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, game)
    await on_branches(sessions, game, "beta")

    reply = await update(
        downloads,
        user,
        max_concurrent_downloads=5,
        schedule=schedule("22:00", "06:30"),
        product_branches=[pb.ProductBranch(product_id=str(game), branch="beta")],
        device_id="desk-pc",
    )

    written = reply.settings
    assert (written.max_concurrent_downloads, written.bandwidth_limit_kbps, written.etag) == (5, 0, "v1")
    assert written.schedule == schedule("22:00", "06:30")
    assert branches(written) == {str(game): "beta"}
    assert written.HasField("updated_at")
    assert await get(downloads, user) == written
    [(kind, note)] = await wait_notifications(redis, user, 1)
    assert kind == UPDATED
    assert note == {
        "etag": "v1",
        "deviceId": "desk-pc",
        "maxConcurrentDownloads": 5,
        "bandwidthLimitKbps": 0,
        "schedule": {"startTime": "22:00", "endTime": "06:30", "timeZone": "Europe/Berlin"},
        "productBranches": {str(game): "beta"},
        "updatedAt": written.updated_at.ToJsonString(),
    }
    async with sessions() as session:
        stored = await get_download_settings(session, user)
    assert stored.schedule == ScheduleWindow(time(22), time(6, 30), "Europe/Berlin")
    assert branch_for(stored, game) == "beta"
    assert branch_for(stored, uuid.uuid4()) == "public"

    # Without a mask, fields not set stay as they are.
    second = (await update(downloads, user, bandwidth_limit_kbps=5000, etag="v1")).settings
    assert (second.max_concurrent_downloads, second.bandwidth_limit_kbps, second.etag) == (5, 5000, "v2")
    assert second.schedule == written.schedule
    assert branches(second) == {str(game): "beta"}


async def test_branches_merge_public_removes_and_a_masked_list_replaces(downloads, sessions):
    user, a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, a, b, c)
    await on_branches(sessions, a, "beta")
    await on_branches(sessions, b, "nightly")
    await on_branches(sessions, c, "beta")
    await update(downloads, user, product_branches=[pb.ProductBranch(product_id=str(a), branch="beta")])

    merged = await update(
        downloads, user, product_branches=[pb.ProductBranch(product_id=str(b), branch="nightly")]
    )
    assert branches(merged.settings) == {str(a): "beta", str(b): "nightly"}

    removed = await update(
        downloads, user, product_branches=[pb.ProductBranch(product_id=str(a), branch="public")]
    )
    assert branches(removed.settings) == {str(b): "nightly"}

    replaced = await update(
        downloads,
        user,
        mask=("product_branches",),
        product_branches=[pb.ProductBranch(product_id=str(c), branch="beta")],
    )
    assert branches(replaced.settings) == {str(c): "beta"}


async def test_a_masked_field_left_unset_returns_to_its_default(downloads):
    user = uuid.uuid4()
    await update(
        downloads,
        user,
        max_concurrent_downloads=7,
        bandwidth_limit_kbps=100,
        schedule=schedule("01:00", "02:00"),
    )

    reply = await update(downloads, user, mask=("schedule", "max_concurrent_downloads"))

    settings = reply.settings
    assert not settings.HasField("schedule")
    assert (settings.max_concurrent_downloads, settings.bandwidth_limit_kbps) == (3, 100)

    # What the mask does not name is ignored, branch entries included (so no ownership check for them).
    ignored = await update(
        downloads,
        user,
        mask=("bandwidth_limit_kbps",),
        max_concurrent_downloads=9,
        bandwidth_limit_kbps=7,
        product_branches=[pb.ProductBranch(product_id=str(uuid.uuid4()), branch="beta")],
    )
    assert (ignored.settings.max_concurrent_downloads, ignored.settings.bandwidth_limit_kbps) == (3, 7)
    assert list(ignored.settings.product_branches) == []


async def test_a_stale_etag_is_aborted_and_changes_nothing(downloads, redis):
    user = uuid.uuid4()
    first = (await update(downloads, user, max_concurrent_downloads=2)).settings
    second = (await update(downloads, user, max_concurrent_downloads=4, etag=first.etag)).settings

    refused = await failure(update(downloads, user, max_concurrent_downloads=9, etag=first.etag))
    refused_defaults = await failure(update(downloads, user, max_concurrent_downloads=9, etag="v0"))

    assert refused == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH", [])
    assert refused_defaults == refused
    assert await get(downloads, user) == second
    sentinel = (await update(downloads, user, bandwidth_limit_kbps=1, etag=second.etag)).settings
    notes = await wait_notifications(redis, user, 3)
    assert [n["etag"] for _, n in notes] == [first.etag, second.etag, sentinel.etag]


async def test_concurrent_writers_with_one_etag_one_wins_the_rest_are_aborted(downloads):
    user = uuid.uuid4()
    base = (await update(downloads, user, bandwidth_limit_kbps=10)).settings

    results = await asyncio.gather(
        *(update(downloads, user, max_concurrent_downloads=n, etag=base.etag) for n in range(1, 11)),
        return_exceptions=True,
    )

    won = [r for r in results if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1
    assert {e.code() for e in lost} == {grpc.StatusCode.ABORTED}
    assert len(lost) == 9
    assert await get(downloads, user) == won[0].settings
    assert won[0].settings.etag == "v2"


async def test_concurrent_unconditional_branch_choices_all_apply(downloads, sessions):
    user = uuid.uuid4()
    games = [uuid.uuid4() for _ in range(8)]
    await grant(sessions, user, *games)
    for game in games:
        await on_branches(sessions, game, "beta")

    await asyncio.gather(
        *(
            update(downloads, user, product_branches=[pb.ProductBranch(product_id=str(g), branch="beta")])
            for g in games
        )
    )

    settings = await get(downloads, user)
    assert branches(settings) == {str(g): "beta" for g in games}
    assert settings.etag == "v8"


async def test_a_replayed_request_id_returns_the_first_response_and_writes_once(downloads, redis):
    user = uuid.uuid4()
    request_id = str(uuid.uuid4())

    first = await update(downloads, user, schedule=schedule("09:00", "17:00", "UTC"), request_id=request_id)
    replay = await update(downloads, user, max_concurrent_downloads=9, request_id=request_id)

    assert replay == first
    assert (await get(downloads, user)).etag == "v1"
    sentinel = await update(downloads, user, bandwidth_limit_kbps=2)
    notes = await wait_notifications(redis, user, 2)
    assert [n["etag"] for _, n in notes] == [first.settings.etag, sentinel.settings.etag]


async def test_a_branch_for_a_product_not_in_the_library_is_access_denied_and_writes_nothing(
    downloads, sessions
):
    user, owned, not_owned = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, owned)

    refused = await failure(
        update(
            downloads,
            user,
            max_concurrent_downloads=2,
            product_branches=[
                pb.ProductBranch(product_id=str(owned), branch="beta"),
                pb.ProductBranch(product_id=str(not_owned), branch="beta"),
            ],
        )
    )

    assert refused == (grpc.StatusCode.PERMISSION_DENIED, "PRODUCT_ACCESS_DENIED", [])
    assert await row_count(sessions, user) == 0
    # Going back to `public` needs no ownership (a refunded game's choice can still be dropped).
    await update(
        downloads, user, product_branches=[pb.ProductBranch(product_id=str(not_owned), branch="public")]
    )


async def test_a_branch_without_a_published_version_is_not_found_and_writes_nothing(downloads, sessions):
    user, game = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, game)
    await on_branches(sessions, game, "public", "beta")

    refused = await failure(
        update(
            downloads,
            user,
            bandwidth_limit_kbps=5,
            product_branches=[pb.ProductBranch(product_id=str(game), branch="staging")],
        )
    )

    assert refused == (grpc.StatusCode.NOT_FOUND, "PRODUCT_VERSION_NOT_FOUND", [])
    assert await row_count(sessions, user) == 0
    chosen = await update(
        downloads, user, product_branches=[pb.ProductBranch(product_id=str(game), branch="beta")]
    )
    assert branches(chosen.settings) == {str(game): "beta"}


async def test_user_b_sees_only_their_own_settings(downloads):
    a, b = uuid.uuid4(), uuid.uuid4()
    mine = (await update(downloads, a, max_concurrent_downloads=10, bandwidth_limit_kbps=777)).settings

    theirs = await get(downloads, b)
    assert (theirs.max_concurrent_downloads, theirs.bandwidth_limit_kbps, theirs.etag) == (3, 0, "v0")
    # A's etag means nothing for B's document, and B's write leaves A's alone.
    assert (await failure(update(downloads, b, bandwidth_limit_kbps=1, etag=mine.etag)))[1] == "ETAG_MISMATCH"
    await update(downloads, b, bandwidth_limit_kbps=1)
    assert await get(downloads, a) == mine


@pytest.mark.parametrize(
    ("fields", "bad_fields"),
    [
        ({"max_concurrent_downloads": 0}, ["settings.max_concurrent_downloads"]),
        ({"max_concurrent_downloads": 11}, ["settings.max_concurrent_downloads"]),
        ({"bandwidth_limit_kbps": -1}, ["settings.bandwidth_limit_kbps"]),
        ({"schedule": schedule("24:00", "06:00")}, ["settings.schedule.start_time"]),
        ({"schedule": schedule("9:00", "17:00")}, ["settings.schedule.start_time"]),
        ({"schedule": schedule("08:00", "08:00")}, ["settings.schedule.end_time"]),
        ({"schedule": schedule("08:00", "09:00", "Mars/Olympus")}, ["settings.schedule.time_zone"]),
        ({"schedule": schedule("08:00", "09:00", "")}, ["settings.schedule.time_zone"]),
        (
            {"product_branches": [pb.ProductBranch(product_id="x", branch="Beta!")]},
            ["settings.product_branches[0].product_id", "settings.product_branches[0].branch"],
        ),
        (
            {
                "product_branches": [
                    pb.ProductBranch(product_id="7d3f7f4e-6f2c-4c55-9d0b-4b8f5b1b2a10", branch="beta"),
                    pb.ProductBranch(product_id="7D3F7F4E-6F2C-4C55-9D0B-4B8F5B1B2A10", branch="public"),
                ]
            },
            ["settings.product_branches[1].product_id"],
        ),
        ({"etag": "e" * 65, "bandwidth_limit_kbps": 1}, ["settings.etag"]),
        ({}, ["settings"]),
        ({"mask": ("max_concurrent_downloads", "colour")}, ["update_mask.paths[1]"]),
        ({"device_id": "d" * 129, "bandwidth_limit_kbps": 1}, ["device_id"]),
        ({"device_id": "tab\there", "bandwidth_limit_kbps": 1}, ["device_id"]),
        ({"request_id": "nope", "bandwidth_limit_kbps": 1}, ["request_id"]),
    ],
)
async def test_invalid_updates_are_rejected_with_field_violations_and_write_nothing(
    downloads, sessions, fields, bad_fields
):
    user = uuid.uuid4()

    refused = await failure(update(downloads, user, **fields))

    assert refused == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", bad_fields)
    assert await row_count(sessions, user) == 0


async def test_an_update_without_settings_is_a_field_violation(downloads):
    refused = await failure(
        downloads.UpdateDownloadSettings(
            pb.UpdateDownloadSettingsRequest(), metadata=user_metadata(uuid.uuid4())
        )
    )
    assert refused == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["settings"])


async def _start(stub, user: uuid.UUID, product: uuid.UUID) -> pb.DownloadSession:
    request = pb.StartDownloadRequest(product_id=str(product), installation_path="/games/x")
    return (await stub.StartDownload(request, metadata=user_metadata(user))).download


async def _status(stub, user: uuid.UUID, download: pb.DownloadSession) -> int:
    request = pb.GetDownloadRequest(download_id=download.download_id)
    return (await stub.GetDownload(request, metadata=user_metadata(user))).download.status


async def test_raising_the_limit_or_dropping_the_schedule_starts_waiting_downloads_at_once(
    downloads, sessions
):
    user, first_game, second_game = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, first_game, second_game)
    await on_branches(sessions, first_game, "public")
    await on_branches(sessions, second_game, "public")
    await update(downloads, user, max_concurrent_downloads=1)
    running = await _start(downloads, user, first_game)
    waiting = await _start(downloads, user, second_game)
    assert (running.status, waiting.status) == (pb.DownloadSession.DOWNLOADING, pb.DownloadSession.QUEUED)

    await update(downloads, user, max_concurrent_downloads=2)

    assert await _status(downloads, user, waiting) == pb.DownloadSession.DOWNLOADING


async def test_a_schedule_keeps_new_downloads_queued_until_it_is_removed(downloads, sessions):
    user, game = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, game)
    await on_branches(sessions, game, "public")
    # A one-minute window twelve hours away from now, whatever the time of the run.
    now = datetime.now(UTC)
    start = (now + timedelta(hours=12)).strftime("%H:%M")
    end = (now + timedelta(hours=12, minutes=1)).strftime("%H:%M")
    await update(downloads, user, schedule=schedule(start, end, "UTC"))

    queued = await _start(downloads, user, game)
    assert queued.status == pb.DownloadSession.QUEUED

    await update(downloads, user, mask=("schedule",))

    assert await _status(downloads, user, queued) == pb.DownloadSession.DOWNLOADING
