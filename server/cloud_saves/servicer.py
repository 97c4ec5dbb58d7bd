"""CloudSaveService transport: validate, map proto ⇄ domain, call a use case. Nothing else.

The field checks here mirror the contract's buf.validate rules until the call pipeline enforces them
itself; rules that need state (ownership, quota, the head version, etags) live in the use cases.
"""

from __future__ import annotations

import re

from library.v1 import cloud_save_service_pb2 as pb
from library.v1 import cloud_save_service_pb2_grpc
from server.cloud_saves.rules import COMMITTED, CONFLICT, PENDING, Policy, SaveGame, Slot
from server.cloud_saves.use_cases import CloudSaves, Resolution, UploadRequest
from server.core.auth import current_user_id
from server.core.deps import Deps
from server.core.protoconv import timestamp
from server.core.validation import Validator

SLOT_NAME = re.compile(r"[A-Za-z0-9 _.\-]{1,64}")
SHA256_HEX = re.compile(r"[0-9A-Fa-f]{64}")
CONTRACT_MAX_FILE_BYTES = 100 * 1024 * 1024
DEVICE_ID_MAX_LEN = 128
DESCRIPTION_MAX_LEN = 256
ETAG_MAX_LEN = 128
_STATUS = {PENDING: pb.SaveGame.PENDING, COMMITTED: pb.SaveGame.COMMITTED, CONFLICT: pb.SaveGame.CONFLICT}
_Outcome = pb.ConfirmSaveGameUploadResponse


def _slot_name(v: Validator, field: str, value: str) -> str:
    if not SLOT_NAME.fullmatch(value):
        v.fail(field, "must be 1-64 characters of [A-Za-z0-9 _.-]")
    return value


def _device_id(v: Validator, value: str) -> str:
    return v.text("device_id", value, max_len=DEVICE_ID_MAX_LEN, required=True)


def _etag(v: Validator, value: str) -> str:
    return v.text("etag", value, max_len=ETAG_MAX_LEN)


def save_game_pb(save: SaveGame | None) -> pb.SaveGame | None:
    if save is None:
        return None
    return pb.SaveGame(
        savegame_id=str(save.savegame_id),
        product_id=str(save.product_id),
        slot_name=save.slot_name,
        version_number=save.version_number,
        base_version=save.base_version,
        file_size_bytes=save.file_size_bytes,
        file_hash_sha256=save.file_hash_sha256,
        client_modified_at=timestamp(save.client_modified_at),
        server_uploaded_at=timestamp(save.server_uploaded_at),
        device_id=save.device_id,
        playtime_seconds=save.playtime_seconds or 0,
        progress_percentage=save.progress_percentage or 0.0,
        description=save.description,
        status=_STATUS.get(save.status, pb.SaveGame.STATUS_UNSPECIFIED),
        etag=save.etag,
    )


def slot_pb(slot: Slot | None) -> pb.SaveSlot | None:
    if slot is None:
        return None
    return pb.SaveSlot(
        product_id=str(slot.product_id),
        slot_name=slot.slot_name,
        head=save_game_pb(slot.head),
        versions=[save_game_pb(s) for s in slot.versions],
        conflicts=[save_game_pb(s) for s in slot.conflicts],
        etag=slot.etag,
        updated_at=timestamp(slot.head.server_uploaded_at if slot.head else None),
    )


class CloudSaveServiceServicer(cloud_save_service_pb2_grpc.CloudSaveServiceServicer):
    def __init__(self, deps: Deps):
        self._deps = deps
        self._saves = CloudSaves(deps)

    async def ListSaveGames(self, request: pb.ListSaveGamesRequest, context):
        user_id = current_user_id()
        v = Validator()
        product_id = v.uuid("product_id", request.product_id)
        v.check()
        listing = await self._saves.list_slots(user_id, product_id)
        return pb.ListSaveGamesResponse(
            slots=[slot_pb(s) for s in listing.slots],
            quota_bytes=listing.quota_bytes,
            used_bytes=listing.used_bytes,
            max_file_size_bytes=listing.max_file_size_bytes,
        )

    async def RequestSaveGameUploadURL(self, request: pb.RequestSaveGameUploadURLRequest, context):
        user_id = current_user_id()
        v = Validator()
        product_id = v.uuid("product_id", request.product_id)
        slot_name = _slot_name(v, "slot_name", request.slot_name)
        if not 1 <= request.file_size_bytes <= CONTRACT_MAX_FILE_BYTES:
            v.fail("file_size_bytes", f"must be 1 to {CONTRACT_MAX_FILE_BYTES} bytes")
        if not SHA256_HEX.fullmatch(request.file_hash_sha256):
            v.fail("file_hash_sha256", "must be 64 hex characters")
        v.non_negative("base_version", request.base_version)
        modified_at = v.timestamp("client_modified_at", request.client_modified_at, allow_future=True)
        device_id = _device_id(v, request.device_id)
        playtime = request.playtime_seconds if request.HasField("playtime_seconds") else None
        if playtime is not None:
            v.non_negative("playtime_seconds", playtime)
        progress = request.progress_percentage if request.HasField("progress_percentage") else None
        if progress is not None and not 0 <= progress <= 100:
            v.fail("progress_percentage", "must be 0 to 100")
        v.text("description", request.description, max_len=DESCRIPTION_MAX_LEN)
        v.enum("conflict_policy", request.conflict_policy, set(Policy))
        request_id = v.request_id(request.request_id)
        v.check()
        ticket = await self._saves.request_upload(
            user_id,
            UploadRequest(
                product_id=product_id,
                slot_name=slot_name,
                file_size_bytes=request.file_size_bytes,
                file_hash_sha256=request.file_hash_sha256.lower(),
                base_version=request.base_version,
                client_modified_at=modified_at,
                device_id=device_id,
                playtime_seconds=playtime,
                progress_percentage=progress,
                description=request.description,
                conflict_policy=request.conflict_policy,
            ),
            request_id,
        )
        return pb.RequestSaveGameUploadURLResponse(
            savegame_id=str(ticket.savegame_id),
            upload_url=ticket.upload_url,
            required_headers=ticket.required_headers,
            expires_at=timestamp(ticket.expires_at),
        )

    async def ConfirmSaveGameUpload(self, request: pb.ConfirmSaveGameUploadRequest, context):
        user_id = current_user_id()
        v = Validator()
        savegame_id = v.uuid("savegame_id", request.savegame_id)
        v.check()
        confirmed = await self._saves.confirm(user_id, savegame_id)
        return pb.ConfirmSaveGameUploadResponse(
            save_game=save_game_pb(confirmed.save_game),
            outcome=_Outcome.COMMITTED if confirmed.committed else _Outcome.DISCARDED,
            auto_resolved=confirmed.auto_resolved,
            head=save_game_pb(confirmed.head),
        )

    async def RequestSaveGameDownloadURL(self, request: pb.RequestSaveGameDownloadURLRequest, context):
        user_id = current_user_id()
        v = Validator()
        savegame_id = v.uuid("savegame_id", request.savegame_id)
        v.check()
        download = await self._saves.download(user_id, savegame_id)
        return pb.RequestSaveGameDownloadURLResponse(
            download_url=download.download_url,
            expires_at=timestamp(download.expires_at),
            save_game=save_game_pb(download.save_game),
        )

    async def ResolveSaveGameConflict(self, request: pb.ResolveSaveGameConflictRequest, context):
        user_id = current_user_id()
        v = Validator()
        product_id = v.uuid("product_id", request.product_id)
        slot_name = _slot_name(v, "slot_name", request.slot_name)
        savegame_id = v.uuid("savegame_id", request.savegame_id)
        v.enum("resolution", request.resolution, set(Resolution), required=True)
        if request.resolution == Resolution.KEEP_BOTH or request.new_slot_name:
            _slot_name(v, "new_slot_name", request.new_slot_name)
        if request.new_slot_name and request.resolution != Resolution.KEEP_BOTH:
            v.fail("new_slot_name", "must be empty unless the resolution is KEEP_BOTH")
        etag = _etag(v, request.etag)
        request_id = v.request_id(request.request_id)
        v.check()
        resolved = await self._saves.resolve(
            user_id,
            product_id,
            slot_name,
            savegame_id,
            Resolution(request.resolution),
            request.new_slot_name,
            etag,
            request_id,
        )
        return pb.ResolveSaveGameConflictResponse(
            slot=slot_pb(resolved.slot), new_slot=slot_pb(resolved.new_slot)
        )

    async def RestoreSaveGameVersion(self, request: pb.RestoreSaveGameVersionRequest, context):
        user_id = current_user_id()
        v = Validator()
        product_id = v.uuid("product_id", request.product_id)
        slot_name = _slot_name(v, "slot_name", request.slot_name)
        if request.version_number < 1:
            v.fail("version_number", "must be at least 1")
        device_id = _device_id(v, request.device_id)
        etag = _etag(v, request.etag)
        request_id = v.request_id(request.request_id)
        v.check()
        restored = await self._saves.restore(
            user_id, product_id, slot_name, request.version_number, device_id, etag, request_id
        )
        return pb.RestoreSaveGameVersionResponse(
            slot=slot_pb(restored.slot), head=save_game_pb(restored.head)
        )
