"""GameSettingsSyncService over native gRPC against the real stack (PostgreSQL, Redis, the outbox relay).

Every test uses fresh user and product ids. "No notification" is checked against a sentinel: a later
successful write whose notification must be the only one (or the next one) in the user's stream.
"""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from google.protobuf import struct_pb2

from library.v1 import game_settings_service_pb2 as pb
from server.game_settings.rules import MAX_DOCUMENT_BYTES, document_size
from tests.support.achievements import wait_notifications
from tests.support.auth import user_metadata
from tests.support.game_settings import get, payload, put, stored, struct
from tests.support.grpc_errors import failure
from tests.support.ownership import grant

UPDATED = "gameSettingsUpdated"


async def test_the_first_get_is_an_empty_document_with_an_etag_and_stores_nothing(
    game_settings, owner, sessions
):
    user, product = owner

    document = await get(game_settings, user, product)

    assert document.product_id == str(product)
    assert payload(document) == {}
    assert document.etag
    assert not document.HasField("last_synced_at")
    assert document.updated_by_device_id == ""
    assert await get(game_settings, user, product) == document
    assert await stored(sessions, user, product) is None


async def test_replace_stores_the_document_and_notifies_naming_the_device(
    game_settings, owner, sessions, redis
):
    user, product = owner
    before = await get(game_settings, user, product)
    document = {"graphics": {"quality": "ultra", "fov": 90, "gamma": 2.2}, "keys": ["w", "a"], "hud": True}

    reply = await put(game_settings, user, product, document, device_id="desk-pc")

    written = reply.game_settings
    assert payload(written) == document
    assert written.etag not in ("", before.etag)
    assert written.updated_by_device_id == "desk-pc"
    assert written.HasField("last_synced_at")
    assert await get(game_settings, user, product) == written
    assert await stored(sessions, user, product) == (document, 1)  # 90 is stored as an integer
    [(kind, note)] = await wait_notifications(redis, user, 1)
    assert kind == UPDATED
    assert note == {
        "productId": str(product),
        "etag": written.etag,
        "deviceId": "desk-pc",
        "lastSyncedAt": written.last_synced_at.ToJsonString(),
    }

    replaced = await put(game_settings, user, product, {"hud": False})
    assert payload(replaced.game_settings) == {"hud": False}
    assert replaced.game_settings.updated_by_device_id == ""


async def test_merge_patch_merges_nested_objects_and_null_deletes(game_settings, owner):
    user, product = owner
    await put(
        game_settings,
        user,
        product,
        {"graphics": {"quality": "high", "vsync": True, "fov": 90}, "sound": {"music": 0.5}, "old": 1},
    )

    reply = await put(
        game_settings,
        user,
        product,
        {"graphics": {"quality": "ultra", "vsync": None}, "old": None, "controls": {"invertY": True}},
        merge=True,
    )

    expected = {
        "graphics": {"quality": "ultra", "fov": 90},
        "sound": {"music": 0.5},
        "controls": {"invertY": True},
    }
    assert payload(reply.game_settings) == expected
    assert payload(await get(game_settings, user, product)) == expected


async def test_a_merge_patch_on_a_never_written_document_patches_the_empty_object(game_settings, owner):
    user, product = owner

    reply = await put(game_settings, user, product, {"a": {"b": None, "c": 1}, "d": None}, merge=True)

    assert payload(reply.game_settings) == {"a": {"c": 1}}


async def test_a_stale_etag_is_aborted_and_changes_nothing(game_settings, owner, sessions, redis):
    user, product = owner
    first = (await put(game_settings, user, product, {"v": 1})).game_settings
    second = (await put(game_settings, user, product, {"v": 2}, etag=first.etag)).game_settings

    refused = await failure(put(game_settings, user, product, {"v": 3}, etag=first.etag))
    refused_merge = await failure(put(game_settings, user, product, {"w": 3}, etag=first.etag, merge=True))

    assert refused == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH", [])
    assert refused_merge == refused
    assert await get(game_settings, user, product) == second
    assert await stored(sessions, user, product) == ({"v": 2}, 2)
    sentinel = (await put(game_settings, user, product, {"v": 4}, etag=second.etag)).game_settings
    assert [n["etag"] for _, n in await wait_notifications(redis, user, 3)] == [
        first.etag,
        second.etag,
        sentinel.etag,
    ]


async def test_the_etag_of_the_empty_document_creates_it_only_once(game_settings, owner):
    user, product = owner
    empty = await get(game_settings, user, product)

    created = await put(game_settings, user, product, {"mine": True}, etag=empty.etag)
    refused = await failure(put(game_settings, user, product, {"theirs": True}, etag=empty.etag))

    assert payload(created.game_settings) == {"mine": True}
    assert refused == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH", [])
    assert payload(await get(game_settings, user, product)) == {"mine": True}


@pytest.mark.parametrize("writers", [2, 10])
async def test_concurrent_writers_with_one_etag_one_wins_the_rest_are_aborted(
    game_settings, owner, sessions, writers
):
    user, product = owner
    base = (await put(game_settings, user, product, {"writer": None, "kept": 1})).game_settings

    results = await asyncio.gather(
        *(
            put(game_settings, user, product, {"writer": i}, etag=base.etag, merge=True, device_id=f"d{i}")
            for i in range(writers)
        ),
        return_exceptions=True,
    )

    won = [r for r in results if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1
    assert len(lost) == writers - 1
    assert {e.code() for e in lost} == {grpc.StatusCode.ABORTED}
    winner = won[0].game_settings
    assert payload(winner) == {"writer": int(winner.updated_by_device_id[1:]), "kept": 1}
    assert await get(game_settings, user, product) == winner
    assert (await stored(sessions, user, product))[1] == 2


async def test_concurrent_unconditional_merges_all_apply(game_settings, owner, sessions):
    """Unconditional writers queue on the document's row lock: none is refused, none is lost."""
    user, product, writers = *owner, 30

    await asyncio.gather(
        *(put(game_settings, user, product, {f"k{i}": i}, merge=True) for i in range(writers))
    )

    assert payload(await get(game_settings, user, product)) == {f"k{i}": i for i in range(writers)}
    assert (await stored(sessions, user, product))[1] == writers


async def test_a_replayed_request_id_returns_the_first_response_and_writes_once(
    game_settings, owner, sessions, redis
):
    user, product = owner
    request_id = str(uuid.uuid4())

    first = await put(game_settings, user, product, {"n": 1}, merge=True, request_id=request_id)
    replays = await asyncio.gather(
        *(put(game_settings, user, product, {"n": 2}, merge=True, request_id=request_id) for _ in range(5))
    )

    assert all(r == first for r in replays)
    assert await stored(sessions, user, product) == ({"n": 1}, 1)
    sentinel = await put(game_settings, user, product, {"n": 3}, merge=True)
    assert [n["etag"] for _, n in await wait_notifications(redis, user, 2)] == [
        first.game_settings.etag,
        sentinel.game_settings.etag,
    ]


async def test_an_unowned_product_is_access_denied_for_reads_and_writes(game_settings, sessions):
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, uuid.uuid4())  # owns something else

    assert await failure(get(game_settings, user, product)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PRODUCT_ACCESS_DENIED",
        [],
    )
    assert await failure(put(game_settings, user, product, {"a": 1})) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PRODUCT_ACCESS_DENIED",
        [],
    )
    assert await stored(sessions, user, product) is None


async def test_user_b_can_neither_read_nor_overwrite_user_a_settings(game_settings, sessions, redis):
    a, b, product, b_only = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await grant(sessions, a, product)
    await grant(sessions, b, product, b_only)
    mine = (await put(game_settings, a, product, {"secret": "a"})).game_settings

    # B owns the same game: B has a document of their own, and A's etag means nothing for it.
    assert payload(await get(game_settings, b, product)) == {}
    refused = await failure(put(game_settings, b, product, {"secret": "b"}, etag=mine.etag))
    assert refused == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH", [])
    await put(game_settings, b, product, {"secret": "b"}, merge=True)

    assert await get(game_settings, a, product) == mine
    assert payload(await get(game_settings, b, product)) == {"secret": "b"}
    [(_, note)] = await wait_notifications(redis, a, 1)
    assert note["etag"] == mine.etag
    # A product only B owns is out of A's reach altogether.
    assert (await failure(get(game_settings, a, b_only)))[1] == "PRODUCT_ACCESS_DENIED"


def _of_size(size: int) -> dict:
    overhead = document_size({"blob": ""})
    return {"blob": "x" * (size - overhead)}


async def test_the_document_may_be_64_kib_as_compact_json_and_no_more(game_settings, owner, sessions):
    user, product = owner
    exact = _of_size(MAX_DOCUMENT_BYTES)

    await put(game_settings, user, product, exact)
    refused = await failure(put(game_settings, user, product, _of_size(MAX_DOCUMENT_BYTES + 1)))
    grown = await failure(put(game_settings, user, product, {"more": 1}, merge=True))

    assert refused == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["settings_payload"])
    assert grown == refused  # a merge that would make the stored document too large
    assert await stored(sessions, user, product) == (exact, 1)


def _nan_payload() -> struct_pb2.Struct:
    value = struct_pb2.Struct()
    value["fov"] = float("nan")
    return value


@pytest.mark.parametrize(
    ("fields", "bad_fields"),
    [
        ({"product_id": "not-a-uuid"}, ["product_id"]),
        ({"product_id": ""}, ["product_id"]),
        ({"settings_payload": None}, ["settings_payload"]),
        ({"settings_payload": _nan_payload()}, ["settings_payload.fov"]),
        # NUL anywhere in a request is the contract engine's (string.no_nul), reported at its proto path.
        ({"settings_payload": {"name": "a\x00b"}}, ['settings_payload.fields["name"].string_value']),
        (
            {"settings_payload": {"ok": {"k\x00": 1}}},
            ['settings_payload.fields["ok"].struct_value.fields["k\\u0000"]'],
        ),
        ({"device_id": "d" * 129}, ["device_id"]),
        ({"device_id": "line\nbreak"}, ["device_id"]),
        ({"etag": "e" * 65}, ["etag"]),
        ({"request_id": "nope"}, ["request_id"]),
        (
            {"product_id": "x", "request_id": "y", "device_id": "d" * 200},
            ["product_id", "device_id", "request_id"],
        ),
    ],
)
async def test_invalid_updates_are_rejected_with_field_violations_and_write_nothing(
    game_settings, owner, sessions, fields, bad_fields
):
    user, product = owner
    request = {"product_id": str(product), "settings_payload": {"a": 1}, **fields}
    document = request.pop("settings_payload")
    message = pb.UpdateGameSettingsRequest(**request)
    if isinstance(document, dict):
        message.settings_payload.CopyFrom(struct(document))
    elif document is not None:
        message.settings_payload.CopyFrom(document)

    refused = await failure(game_settings.UpdateGameSettings(message, metadata=user_metadata(user)))

    assert refused == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", bad_fields)
    assert await stored(sessions, user, product) is None


async def test_a_get_with_a_bad_product_id_is_a_field_violation(game_settings, owner):
    user, _ = owner
    refused = await failure(
        game_settings.GetGameSettings(pb.GetGameSettingsRequest(product_id="x"), metadata=user_metadata(user))
    )

    assert refused == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["product_id"])
