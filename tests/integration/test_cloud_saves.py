"""CloudSaveService over native gRPC against the real stack: the PUTs and GETs go to SeaweedFS, events to
Kafka, notifications to the user's Redis stream. Workers that delete from S3 run in this process, one pass
at a time with a controlled clock."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2

from library.v1 import cloud_save_service_pb2 as pb
from library.v1 import cloud_save_service_pb2_grpc
from server.cloud_saves.sweeper import SaveSweeper
from server.core.events.cloudevents import LIBRARY_EVENTS_TOPIC
from server.core.s3 import ObjectStore
from tests.support.achievements import notifications, wait_notifications
from tests.support.auth import user_metadata
from tests.support.grpc_errors import failure, rich_status
from tests.support.kafka import TopicReader, about, assert_cloud_event
from tests.support.ownership import grant
from tests.support.saves import (
    UPLOADED,
    Policy,
    SaveFile,
    fetch,
    in_process,
    listing,
    push,
    put,
    queued_keys,
    referenced_keys,
    rows,
    stored_keys,
    upload_request,
)

MiB = 1024 * 1024
Resolution = pb.ResolveSaveGameConflictRequest.Resolution
LATER = timedelta(hours=2)  # past every reservation and URL lifetime of the default settings


@pytest.fixture
def stub(channel) -> cloud_save_service_pb2_grpc.CloudSaveServiceStub:
    return cloud_save_service_pb2_grpc.CloudSaveServiceStub(channel)


@pytest.fixture
async def store(settings):
    async with ObjectStore(settings) as opened:
        yield opened


def conflict_info(error: grpc.aio.AioRpcError) -> dict[str, str]:
    for detail in rich_status(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.reason == "SAVEGAME_CONFLICT_RESOLUTION_REQUIRED"
            return dict(info.metadata)
    raise AssertionError("no ErrorInfo")


async def sweep_later(settings) -> None:
    """One sweeper pass as if two hours had passed: reservations released, due objects deleted."""
    async with in_process(settings) as deps:
        await SaveSweeper(deps).sweep(datetime.now(UTC) + LATER)


async def test_seed_flows_14_4_and_14_5_upload_then_download_on_another_device(stub, owner, redis, settings):
    user, product = owner
    save = SaveFile.random(64 * 1024)
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        confirmed = await push(stub, user, product, "slot_1", save, device="pc", playtime_seconds=3600)
        [event] = await reader.wait_for(about(user, UPLOADED))

    assert confirmed.outcome == pb.ConfirmSaveGameUploadResponse.COMMITTED
    assert confirmed.save_game.version_number == 1
    assert confirmed.save_game.status == pb.SaveGame.COMMITTED
    assert confirmed.head.savegame_id == confirmed.save_game.savegame_id
    assert_cloud_event(event)
    assert event["data"] == {
        "userId": str(user),
        "productId": str(product),
        "savegameId": confirmed.save_game.savegame_id,
        "slotName": "slot_1",
        "versionNumber": 1,
        "deviceId": "pc",
        "fileSizeBytes": len(save.body),
        "fileHashSha256": save.sha256,
        "timestamp": event["data"]["timestamp"],
    }
    [(kind, payload)] = await wait_notifications(redis, user, 1)
    assert kind == "cloudSaveSynced"
    assert (payload["productId"], payload["slotName"], payload["savegameId"]) == (
        str(product),
        "slot_1",
        confirmed.save_game.savegame_id,
    )
    assert (payload["versionNumber"], payload["deviceId"]) == (1, "pc")

    # 14.5: a new device lists the slots and downloads the latest save.
    listed = await listing(stub, user, product)
    [slot] = listed.slots
    assert (slot.slot_name, slot.head.version_number, slot.head.playtime_seconds) == ("slot_1", 1, 3600)
    assert listed.used_bytes == len(save.body)
    assert (listed.quota_bytes, listed.max_file_size_bytes) == (1024**3, 100 * MiB)
    assert await fetch(stub, user, slot.head.savegame_id) == save.body


async def test_confirming_again_answers_the_same_and_commits_nothing_more(stub, owner):
    user, product = owner
    first = await push(stub, user, product, "slot", SaveFile.random())
    again = await stub.ConfirmSaveGameUpload(
        pb.ConfirmSaveGameUploadRequest(savegame_id=first.save_game.savegame_id), metadata=user_metadata(user)
    )
    assert again == first
    [slot] = (await listing(stub, user, product)).slots
    assert len(slot.versions) == 1


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (SaveFile.random().body, {}, 400),  # a different body: BadDigest
        (b"x" * 100, {"Content-Length": "100"}, 403),  # a different length: the signature fails
    ],
)
async def test_the_store_refuses_a_body_the_url_was_not_signed_for_and_nothing_commits(
    stub, owner, sessions, store, body, headers, status
):
    user, product = owner
    save = SaveFile.random()
    ticket = await stub.RequestSaveGameUploadURL(
        upload_request(product, "s", save), metadata=user_metadata(user)
    )

    refused = await put(ticket, body, **headers)
    code, reason, _ = await failure(
        stub.ConfirmSaveGameUpload(
            pb.ConfirmSaveGameUploadRequest(savegame_id=ticket.savegame_id), metadata=user_metadata(user)
        )
    )

    assert refused.status_code == status
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SAVEGAME_UPLOAD_FAILED")
    listed = await listing(stub, user, product)
    assert (list(listed.slots), listed.used_bytes) == ([], 0)
    assert await rows(sessions, user, product) == []
    assert await stored_keys(store, user, product) == []


async def test_an_upload_url_expired_is_refused_by_the_store(owner, settings, sessions):
    """A server of its own whose upload URLs live one second; the PUT comes after expires_at."""
    from tests.support.processes import free_port, python_server, wait_serving

    user, product = owner
    port = free_port()
    with python_server(
        "test-saves-expiry-server.log",
        GRPC_PORT=str(port),
        METRICS_PORT=str(free_port()),
        WORKERS_ENABLED="0",
        SAVES_UPLOAD_URL_EXPIRY_SECONDS="1",
    ):
        await wait_serving(f"127.0.0.1:{port}")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = cloud_save_service_pb2_grpc.CloudSaveServiceStub(channel)
            save = SaveFile.random()
            ticket = await stub.RequestSaveGameUploadURL(
                upload_request(product, "s", save), metadata=user_metadata(user)
            )
            expires_at = ticket.expires_at.ToDatetime(tzinfo=UTC)
            await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 1.1)
            refused = await put(ticket, save.body)
            code, reason, _ = await failure(
                stub.ConfirmSaveGameUpload(
                    pb.ConfirmSaveGameUploadRequest(savegame_id=ticket.savegame_id),
                    metadata=user_metadata(user),
                )
            )
    assert refused.status_code == 403
    assert "expired" in refused.text.lower()
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SAVEGAME_UPLOAD_FAILED")
    assert await rows(sessions, user, product) == []


async def test_concurrent_upload_requests_never_exceed_the_quota(stub, owner):
    user, product = owner
    metadata = user_metadata(user)
    big = SaveFile(b"\0")  # only the declared size counts for a reservation
    for i in range(10):  # 1000 MiB of the 1024 MiB quota reserved
        request = upload_request(product, f"big {i}", big)
        request.file_size_bytes = 100 * MiB
        await stub.RequestSaveGameUploadURL(request, metadata=metadata)

    async def ask(i: int):
        request = upload_request(product, f"small {i}", big)
        request.file_size_bytes = 10 * MiB
        try:
            await stub.RequestSaveGameUploadURL(request, metadata=metadata)
            return "ok"
        except grpc.aio.AioRpcError as error:
            return error.code()

    outcomes = await asyncio.gather(*(ask(i) for i in range(20)))

    assert outcomes.count("ok") == 2
    assert outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 18
    listed = await listing(stub, user, product)
    assert listed.used_bytes == 1020 * MiB <= listed.quota_bytes
    code, reason, _ = await failure(
        stub.RequestSaveGameUploadURL(request_of(product, 5 * MiB), metadata=metadata)
    )
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "MAX_SAVEGAME_QUOTA_EXCEEDED")


def request_of(product: uuid.UUID, size: int) -> pb.RequestSaveGameUploadURLRequest:
    request = upload_request(product, "another", SaveFile(b"\0"))
    request.file_size_bytes = size
    return request


async def test_ten_concurrent_confirms_from_one_base_make_one_head_and_nine_candidates(
    stub, owner, redis, store
):
    user, product = owner
    metadata = user_metadata(user)
    await push(stub, user, product, "slot", SaveFile.random(), device="base")
    saves = [SaveFile.random() for _ in range(10)]
    tickets = [
        await stub.RequestSaveGameUploadURL(
            upload_request(product, "slot", save, base=1, device=f"dev{i}"), metadata=metadata
        )
        for i, save in enumerate(saves)
    ]
    for ticket, save in zip(tickets, saves, strict=True):
        assert (await put(ticket, save.body)).status_code == 200

    async def confirm(ticket):
        try:
            return await stub.ConfirmSaveGameUpload(
                pb.ConfirmSaveGameUploadRequest(savegame_id=ticket.savegame_id), metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.ABORTED
            return conflict_info(error)

    outcomes = await asyncio.gather(*(confirm(t) for t in tickets))

    committed = [o for o in outcomes if isinstance(o, pb.ConfirmSaveGameUploadResponse)]
    conflicts = [o for o in outcomes if isinstance(o, dict)]
    assert (len(committed), len(conflicts)) == (1, 9)
    [winner] = committed
    assert winner.save_game.version_number == 2
    for info in conflicts:
        assert info["cloudSavegameId"] == winner.save_game.savegame_id
        assert info["cloudVersionNumber"] == "2"
        assert info["localDeviceId"] != info["cloudDeviceId"] == winner.save_game.device_id
        assert {"localClientModifiedAt", "localFileSizeBytes", "cloudClientModifiedAt"} <= set(info)
    [slot] = (await listing(stub, user, product)).slots
    assert [v.version_number for v in slot.versions] == [2, 1]
    assert len(slot.conflicts) == 9
    assert {c.savegame_id for c in slot.conflicts} == {i["savegameId"] for i in conflicts}
    # every candidate's bytes are intact and downloadable: nothing was overwritten
    by_id = {t.savegame_id: s.body for t, s in zip(tickets, saves, strict=True)}
    for candidate in slot.conflicts:
        assert await fetch(stub, user, candidate.savegame_id) == by_id[candidate.savegame_id]
    kinds = [kind for kind, _ in await wait_notifications(redis, user, 11)]
    assert (kinds.count("cloudSaveSynced"), kinds.count("cloudSaveConflict")) == (2, 9)


@pytest.mark.parametrize(
    ("policy", "local", "cloud", "local_wins"),
    [
        ("MOST_RECENTLY_MODIFIED", {"modified_at": datetime(2026, 5, 2, tzinfo=UTC)}, {}, True),
        ("MOST_RECENTLY_MODIFIED", {"modified_at": datetime(2026, 4, 30, tzinfo=UTC)}, {}, False),
        ("LONGEST_PLAYTIME", {"playtime_seconds": 700}, {}, True),
        ("LONGEST_PLAYTIME", {"playtime_seconds": 100}, {}, False),
        ("HIGHEST_PROGRESS", {"progress_percentage": 80.0}, {}, True),
        ("HIGHEST_PROGRESS", {"progress_percentage": 10.0}, {}, False),
    ],
)
async def test_each_automatic_policy_decides_a_conflict_as_documented(
    stub, owner, sessions, policy, local, cloud, local_wins
):
    user, product = owner
    await push(stub, user, product, "s", SaveFile.random())
    head_fields = {
        "modified_at": datetime(2026, 5, 1, tzinfo=UTC),
        "playtime_seconds": 500,
        "progress_percentage": 50.0,
    }
    cloud_head = await push(stub, user, product, "s", SaveFile.random(), base=1, **{**head_fields, **cloud})
    mine = SaveFile.random()
    fields = {**head_fields, **local}
    result = await push(
        stub, user, product, "s", mine, base=1, conflict_policy=Policy.Value(policy), **fields
    )

    assert result.auto_resolved
    [slot] = (await listing(stub, user, product)).slots
    if local_wins:
        assert result.outcome == pb.ConfirmSaveGameUploadResponse.COMMITTED
        assert (slot.head.savegame_id, slot.head.version_number) == (result.save_game.savegame_id, 3)
        assert await fetch(stub, user, slot.head.savegame_id) == mine.body
    else:
        assert result.outcome == pb.ConfirmSaveGameUploadResponse.DISCARDED
        assert result.head.savegame_id == cloud_head.save_game.savegame_id == slot.head.savegame_id
        assert slot.head.version_number == 2
    assert list(slot.conflicts) == []
    assert [v.version_number for v in slot.versions] == ([3, 2, 1] if local_wins else [2, 1])


async def test_a_tie_under_an_automatic_policy_falls_back_to_manual(stub, owner):
    user, product = owner
    await push(stub, user, product, "s", SaveFile.random())
    await push(stub, user, product, "s", SaveFile.random(), base=1, playtime_seconds=100)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await push(
            stub,
            user,
            product,
            "s",
            SaveFile.random(),
            base=1,
            playtime_seconds=100,
            conflict_policy=Policy.LONGEST_PLAYTIME,
        )
    assert raised.value.code() == grpc.StatusCode.ABORTED
    assert conflict_info(raised.value)["localPlaytimeSeconds"] == "100"


async def _conflicted(stub, user, product, slot="s") -> tuple[pb.SaveSlot, SaveFile]:
    """A slot with head version 2 and one conflict candidate (based on version 1)."""
    await push(stub, user, product, slot, SaveFile.random())
    await push(stub, user, product, slot, SaveFile.random(), base=1)
    local = SaveFile.random()
    with pytest.raises(grpc.aio.AioRpcError):
        await push(stub, user, product, slot, local, base=1, device="laptop")
    [shown] = [s for s in (await listing(stub, user, product)).slots if s.slot_name == slot]
    return shown, local


def resolve_request(product, slot: pb.SaveSlot, resolution, **fields) -> pb.ResolveSaveGameConflictRequest:
    return pb.ResolveSaveGameConflictRequest(
        product_id=str(product),
        slot_name=slot.slot_name,
        savegame_id=fields.pop("savegame_id", slot.conflicts[0].savegame_id),
        resolution=resolution,
        etag=fields.pop("etag", slot.etag),
        **fields,
    )


async def test_keep_both_moves_the_local_copy_to_a_new_slot(stub, owner):
    user, product = owner
    slot, local = await _conflicted(stub, user, product)
    resolved = await stub.ResolveSaveGameConflict(
        resolve_request(product, slot, Resolution.KEEP_BOTH, new_slot_name="s from laptop"),
        metadata=user_metadata(user),
    )
    assert (resolved.slot.head.version_number, list(resolved.slot.conflicts)) == (2, [])
    assert resolved.new_slot.slot_name == "s from laptop"
    assert (resolved.new_slot.head.version_number, resolved.new_slot.head.device_id) == (1, "laptop")
    assert await fetch(stub, user, resolved.new_slot.head.savegame_id) == local.body
    names = [s.slot_name for s in (await listing(stub, user, product)).slots]
    assert names == ["s", "s from laptop"]


async def test_keep_local_makes_the_candidate_the_head_and_keeps_the_old_head(stub, owner):
    user, product = owner
    slot, local = await _conflicted(stub, user, product)
    resolved = await stub.ResolveSaveGameConflict(
        resolve_request(product, slot, Resolution.KEEP_LOCAL), metadata=user_metadata(user)
    )
    assert [v.version_number for v in resolved.slot.versions] == [3, 2, 1]
    assert await fetch(stub, user, resolved.slot.head.savegame_id) == local.body


async def test_keep_cloud_discards_the_candidate_and_frees_its_quota(stub, owner, sessions, store, settings):
    user, product = owner
    slot, local = await _conflicted(stub, user, product)
    before = (await listing(stub, user, product)).used_bytes
    resolved = await stub.ResolveSaveGameConflict(
        resolve_request(product, slot, Resolution.KEEP_CLOUD), metadata=user_metadata(user)
    )
    assert (resolved.slot.head.version_number, list(resolved.slot.conflicts)) == (2, [])
    assert (await listing(stub, user, product)).used_bytes == before - len(local.body)
    await sweep_later(settings)
    assert await stored_keys(store, user, product) == await referenced_keys(sessions, user, product)


async def test_a_stale_slot_etag_is_aborted_and_changes_nothing(stub, owner):
    user, product = owner
    slot, _ = await _conflicted(stub, user, product)
    await push(stub, user, product, "s", SaveFile.random(), base=2)  # the head moves on: etag is stale
    code, reason, _ = await failure(
        stub.ResolveSaveGameConflict(
            resolve_request(product, slot, Resolution.KEEP_LOCAL), metadata=user_metadata(user)
        )
    )
    assert (code, reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    [now] = (await listing(stub, user, product)).slots
    assert (now.head.version_number, len(now.conflicts)) == (3, 1)


async def test_resolve_errors_name_the_problem(stub, owner):
    user, product = owner
    slot, _ = await _conflicted(stub, user, product)
    metadata = user_metadata(user)
    cases = [
        (
            resolve_request(product, slot, Resolution.KEEP_BOTH, new_slot_name="s"),
            "SAVEGAME_SLOT_ALREADY_EXISTS",
        ),
        (resolve_request(product, slot, Resolution.KEEP_BOTH), "VALIDATION_FAILED"),
        (resolve_request(product, slot, Resolution.KEEP_LOCAL, new_slot_name="x"), "VALIDATION_FAILED"),
        (resolve_request(product, slot, 0), "VALIDATION_FAILED"),
        (resolve_request(product, slot, 9), "VALIDATION_FAILED"),
        (
            resolve_request(product, slot, Resolution.KEEP_LOCAL, savegame_id=slot.head.savegame_id),
            "SAVEGAME_NOT_FOUND",
        ),
    ]
    for request, expected in cases:
        _, reason, _ = await failure(stub.ResolveSaveGameConflict(request, metadata=metadata))
        assert reason == expected, request


async def test_restore_brings_back_an_older_version_byte_for_byte_as_a_new_head(stub, owner, redis):
    user, product = owner
    first = SaveFile.random(10_000)
    await push(stub, user, product, "s", first)
    await push(stub, user, product, "s", SaveFile.random(), base=1)
    [slot] = (await listing(stub, user, product)).slots

    restored = await stub.RestoreSaveGameVersion(
        pb.RestoreSaveGameVersionRequest(
            product_id=str(product), slot_name="s", version_number=1, device_id="deck", etag=slot.etag
        ),
        metadata=user_metadata(user),
    )

    assert (restored.head.version_number, restored.head.device_id) == (3, "deck")
    assert restored.head.file_hash_sha256 == first.sha256
    assert [v.version_number for v in restored.slot.versions] == [3, 2, 1]
    assert await fetch(stub, user, restored.head.savegame_id) == first.body
    kind, payload = (await notifications(redis, user))[-1]
    assert (kind, payload["versionNumber"], payload["deviceId"]) == ("cloudSaveSynced", 3, "deck")


async def test_restore_errors_name_the_problem(stub, owner):
    user, product = owner
    await push(stub, user, product, "s", SaveFile.random())
    metadata = user_metadata(user)

    def restore(slot="s", version=1, etag=""):
        return stub.RestoreSaveGameVersion(
            pb.RestoreSaveGameVersionRequest(
                product_id=str(product), slot_name=slot, version_number=version, device_id="pc", etag=etag
            ),
            metadata=metadata,
        )

    assert (await failure(restore(slot="nope")))[1] == "SAVEGAME_SLOT_NOT_FOUND"
    assert (await failure(restore(version=7)))[1] == "SAVEGAME_NOT_FOUND"
    assert (await failure(restore(etag="stale")))[:2] == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    assert (await failure(restore(version=0)))[1:] == ("VALIDATION_FAILED", ["version_number"])


async def test_pruning_keeps_exactly_the_last_ten_and_s3_holds_exactly_what_the_database_references(
    stub, owner, sessions, store, settings
):
    user, product = owner
    saves = [SaveFile.random(512) for _ in range(13)]
    for base, save in enumerate(saves):
        await push(stub, user, product, "s", save, base=base)

    [slot] = (await listing(stub, user, product)).slots
    assert [v.version_number for v in slot.versions] == list(range(13, 3, -1))
    assert len(await queued_keys(sessions, user, product)) == 3  # versions 1-3, not deleted yet

    await sweep_later(settings)

    assert await queued_keys(sessions, user, product) == []
    assert await stored_keys(store, user, product) == await referenced_keys(sessions, user, product)
    assert len(await stored_keys(store, user, product)) == 10
    assert await fetch(stub, user, slot.versions[-1].savegame_id) == saves[3].body


class CrashingStore:
    """The real store, except that the process 'dies' right after its first S3 delete."""

    def __init__(self, store: ObjectStore):
        self._store = store
        self.deleted: list[str] = []

    async def delete(self, key: str) -> None:
        if self.deleted:
            raise SystemExit("crash injected between the S3 delete and the database commit")
        await self._store.delete(key)
        self.deleted.append(key)


async def test_a_crash_between_database_and_s3_neither_orphans_nor_deletes_a_committed_object(
    stub, owner, sessions, store, settings
):
    user, product = owner
    for base in range(12):  # versions 1 and 2 are pruned from the database and queued
        await push(stub, user, product, "s", SaveFile.random(256), base=base)
    queued = await queued_keys(sessions, user, product)
    referenced = await referenced_keys(sessions, user, product)
    # The crash after the prune's commit and before any S3 delete: both objects are still there.
    assert sorted(await stored_keys(store, user, product)) == sorted(referenced + queued)

    crashing = CrashingStore(store)
    async with in_process(settings, store=crashing) as deps:
        with pytest.raises(SystemExit):
            await SaveSweeper(deps).delete_due(datetime.now(UTC) + LATER)
    # One object went, the transaction did not commit: its queue row stays, nothing committed is gone.
    assert await queued_keys(sessions, user, product) == queued
    assert set(referenced) <= set(await stored_keys(store, user, product))

    await sweep_later(settings)
    assert await queued_keys(sessions, user, product) == []
    assert (
        await stored_keys(store, user, product)
        == referenced
        == await referenced_keys(sessions, user, product)
    )


async def test_expired_reservations_are_released_and_their_objects_deleted(
    stub, owner, sessions, store, settings
):
    user, product = owner
    save = SaveFile.random()
    ticket = await stub.RequestSaveGameUploadURL(
        upload_request(product, "s", save), metadata=user_metadata(user)
    )
    assert (await put(ticket, save.body)).status_code == 200  # uploaded, never confirmed
    assert (await listing(stub, user, product)).used_bytes == len(save.body)

    async with in_process(settings) as deps:
        report = await SaveSweeper(deps).sweep(datetime.now(UTC) + LATER)

    assert report.released >= 1
    assert await rows(sessions, user, product) == []
    assert await stored_keys(store, user, product) == []
    assert (await listing(stub, user, product)).used_bytes == 0
    code, reason, _ = await failure(
        stub.ConfirmSaveGameUpload(
            pb.ConfirmSaveGameUploadRequest(savegame_id=ticket.savegame_id), metadata=user_metadata(user)
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "SAVEGAME_NOT_FOUND")


async def test_bad_input_is_a_validation_error_and_reserves_nothing(stub, owner, sessions):
    user, product = owner
    metadata = user_metadata(user)
    save = SaveFile.random()
    await push(stub, user, product, "s", save)
    cases = {
        "slot_name": upload_request(product, "bad/slot", save),
        "file_hash_sha256": upload_request(product, "s", save, base=1),
        "base_version": upload_request(product, "s", save, base=2),
        "conflict_policy": upload_request(product, "s", save, base=1, conflict_policy=7),
        "device_id": upload_request(product, "s", save, base=1, device=""),
        "progress_percentage": upload_request(product, "s", save, base=1, progress_percentage=100.5),
    }
    cases["file_hash_sha256"].file_hash_sha256 = "z" * 64
    for field, request in cases.items():
        assert await failure(stub.RequestSaveGameUploadURL(request, metadata=metadata)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "VALIDATION_FAILED",
            [field],
        ), field
    for size in (0, 100 * MiB + 1):
        request = upload_request(product, "s", save, base=1)
        request.file_size_bytes = size
        assert (await failure(stub.RequestSaveGameUploadURL(request, metadata=metadata)))[2] == [
            "file_size_bytes"
        ]
    assert len(await rows(sessions, user, product)) == 1
    assert (await listing(stub, user, product)).used_bytes == len(save.body)


async def test_an_unowned_product_cannot_take_uploads(stub):
    code, reason, _ = await failure(
        stub.RequestSaveGameUploadURL(
            upload_request(uuid.uuid4(), "s", SaveFile.random()), metadata=user_metadata(uuid.uuid4())
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PRODUCT_ACCESS_DENIED")


async def test_user_b_cannot_see_download_resolve_restore_or_overwrite_user_a_saves(stub, owner, sessions):
    user_a, product = owner
    user_b = uuid.uuid4()
    await grant(sessions, user_b, product)
    slot, _ = await _conflicted(stub, user_a, product)
    b = user_metadata(user_b)

    assert list((await listing(stub, user_b, product)).slots) == []
    not_found = (grpc.StatusCode.NOT_FOUND, "SAVEGAME_NOT_FOUND", [])
    assert (
        await failure(
            stub.RequestSaveGameDownloadURL(
                pb.RequestSaveGameDownloadURLRequest(savegame_id=slot.head.savegame_id), metadata=b
            )
        )
        == not_found
    )
    assert (
        await failure(
            stub.ResolveSaveGameConflict(resolve_request(product, slot, Resolution.KEEP_LOCAL), metadata=b)
        )
        == not_found
    )
    restore = pb.RestoreSaveGameVersionRequest(
        product_id=str(product), slot_name="s", version_number=1, device_id="x"
    )
    assert (await failure(stub.RestoreSaveGameVersion(restore, metadata=b)))[1] == "SAVEGAME_SLOT_NOT_FOUND"
    # A's pending candidate cannot be confirmed by B; B's own upload to the same slot name is B's own slot.
    assert (
        await failure(
            stub.ConfirmSaveGameUpload(
                pb.ConfirmSaveGameUploadRequest(savegame_id=slot.conflicts[0].savegame_id), metadata=b
            )
        )
        == not_found
    )
    mine = await push(stub, user_b, product, "s", SaveFile.random())
    assert mine.save_game.version_number == 1
    [still] = (await listing(stub, user_a, product)).slots
    assert (still.head.savegame_id, still.etag) == (slot.head.savegame_id, slot.etag)


async def test_the_store_down_is_unavailable_and_nothing_is_half_committed(stub, owner, settings, sessions):
    """A server of its own whose S3 endpoint is dead, beside the session's server on the real store."""
    from tests.support.processes import free_port, python_server, wait_serving

    user, product = owner
    committed = await push(stub, user, product, "s", SaveFile.random())
    metadata = user_metadata(user)
    port = free_port()
    with python_server(
        "test-saves-s3-down-server.log",
        GRPC_PORT=str(port),
        METRICS_PORT=str(free_port()),
        WORKERS_ENABLED="0",
        S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
    ):
        await wait_serving(f"127.0.0.1:{port}")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            down = cloud_save_service_pb2_grpc.CloudSaveServiceStub(channel)
            ticket = await down.RequestSaveGameUploadURL(
                upload_request(product, "s", SaveFile.random(), base=1), metadata=metadata
            )
            confirm = await failure(
                down.ConfirmSaveGameUpload(
                    pb.ConfirmSaveGameUploadRequest(savegame_id=ticket.savegame_id), metadata=metadata
                )
            )
            download = await failure(
                down.RequestSaveGameDownloadURL(
                    pb.RequestSaveGameDownloadURLRequest(savegame_id=committed.save_game.savegame_id),
                    metadata=metadata,
                )
            )
            restore = await failure(
                down.RestoreSaveGameVersion(
                    pb.RestoreSaveGameVersionRequest(
                        product_id=str(product), slot_name="s", version_number=1, device_id="pc"
                    ),
                    metadata=metadata,
                )
            )
    assert confirm == (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", [])
    assert download == (grpc.StatusCode.UNAVAILABLE, "SAVEGAME_DOWNLOAD_FAILED", [])
    assert restore == (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", [])
    # The upload stays a pending reservation the client can confirm once the store is back; the restore
    # left nothing behind; the slot is exactly as it was.
    statuses = sorted((r.status, r.version_number or 0) for r in await rows(sessions, user, product))
    assert statuses == [("committed", 1), ("pending", 0)]
    [slot] = (await listing(stub, user, product)).slots
    assert [v.savegame_id for v in slot.versions] == [committed.save_game.savegame_id]


async def test_retried_writes_with_a_request_id_change_nothing_more(stub, owner, sessions):
    user, product = owner
    metadata = user_metadata(user)
    save = SaveFile.random()
    request = upload_request(product, "s", save, request_id=str(uuid.uuid4()))
    first = await stub.RequestSaveGameUploadURL(request, metadata=metadata)
    again = await stub.RequestSaveGameUploadURL(request, metadata=metadata)
    assert again.savegame_id == first.savegame_id
    assert (await listing(stub, user, product)).used_bytes == len(save.body)  # reserved once
    assert (await put(again, save.body)).status_code == 200  # the re-presigned URL works too
    await stub.ConfirmSaveGameUpload(
        pb.ConfirmSaveGameUploadRequest(savegame_id=first.savegame_id), metadata=metadata
    )
    code, _, _ = await failure(stub.RequestSaveGameUploadURL(request, metadata=metadata))
    assert code == grpc.StatusCode.FAILED_PRECONDITION  # confirmed: no new URL for a committed object

    restore = pb.RestoreSaveGameVersionRequest(
        product_id=str(product), slot_name="s", version_number=1, device_id="pc", request_id=str(uuid.uuid4())
    )
    restored = await stub.RestoreSaveGameVersion(restore, metadata=metadata)
    replayed = await stub.RestoreSaveGameVersion(restore, metadata=metadata)
    assert replayed == restored
    [slot] = (await listing(stub, user, product)).slots
    assert [v.version_number for v in slot.versions] == [2, 1]

    slot, _ = await _conflicted(stub, user, product, slot="t")
    resolve = resolve_request(product, slot, Resolution.KEEP_LOCAL, request_id=str(uuid.uuid4()))
    resolved = await stub.ResolveSaveGameConflict(resolve, metadata=metadata)
    assert await stub.ResolveSaveGameConflict(resolve, metadata=metadata) == resolved
    assert len(await rows(sessions, user, product)) == 2 + 3  # slot s: 2 versions; slot t: 3, nothing else


async def test_presigned_urls_never_reach_the_log(stub, owner, server_process):
    """The session's server logs every call (access log at INFO) to .local/test-server.log."""
    from tests.support.processes import ROOT

    assert server_process is not None, "needs the session's own server (not TEST_SERVER_RUNNING=1)"
    user, product = owner
    pushed = await push(stub, user, product, "s", SaveFile.random())
    await fetch(stub, user, pushed.save_game.savegame_id)
    log = (ROOT / ".local" / "test-server.log").read_text(errors="replace")
    assert "RequestSaveGameUploadURL" in log  # the calls were logged...
    assert "X-Amz-Signature" not in log and "X-Amz-Credential" not in log  # ...their URLs were not
