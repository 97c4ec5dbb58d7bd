"""CloudSaveService transport: map proto ⇄ domain, call a use case. Nothing else.

The contract's buf.validate rules (UUIDs, slot names, sizes, hashes, enums, lengths) are enforced by the
call pipeline before a method runs (server/core/contract_rules.py); what is left here is the one
cross-field rule of ResolveSaveGameConflict. Rules that need state (ownership, quota, the head version,
etags) live in the use cases.
"""

from __future__ import annotations

from library.v1 import cloud_save_service_pb2 as pb
from library.v1 import cloud_save_service_pb2_grpc
from server.cloud_saves.rules import COMMITTED, CONFLICT, PENDING, SaveGame, Slot
from server.cloud_saves.use_cases import CloudSaves, Resolution, UploadRequest
from server.core.auth import current_user_id
from server.core.deps import Deps
from server.core.protoconv import timestamp
from server.core.validation import Validator, parse_uuid

_STATUS = {PENDING: pb.SaveGame.PENDING, COMMITTED: pb.SaveGame.COMMITTED, CONFLICT: pb.SaveGame.CONFLICT}
_Outcome = pb.ConfirmSaveGameUploadResponse


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
        listing = await self._saves.list_slots(current_user_id(), parse_uuid(request.product_id))
        return pb.ListSaveGamesResponse(
            slots=[slot_pb(s) for s in listing.slots],
            quota_bytes=listing.quota_bytes,
            used_bytes=listing.used_bytes,
            max_file_size_bytes=listing.max_file_size_bytes,
        )

    async def RequestSaveGameUploadURL(self, request: pb.RequestSaveGameUploadURLRequest, context):
        has = request.HasField
        v = Validator()  # the contract requires the time; a time outside what a Timestamp may hold is ours
        modified_at = v.timestamp("client_modified_at", request.client_modified_at, allow_future=True)
        v.check()
        ticket = await self._saves.request_upload(
            current_user_id(),
            UploadRequest(
                product_id=parse_uuid(request.product_id),
                slot_name=request.slot_name,
                file_size_bytes=request.file_size_bytes,
                file_hash_sha256=request.file_hash_sha256.lower(),
                base_version=request.base_version,
                client_modified_at=modified_at,
                device_id=request.device_id,
                playtime_seconds=request.playtime_seconds if has("playtime_seconds") else None,
                progress_percentage=request.progress_percentage if has("progress_percentage") else None,
                description=request.description,
                conflict_policy=request.conflict_policy,
            ),
            parse_uuid(request.request_id),
        )
        return pb.RequestSaveGameUploadURLResponse(
            savegame_id=str(ticket.savegame_id),
            upload_url=ticket.upload_url,
            required_headers=ticket.required_headers,
            expires_at=timestamp(ticket.expires_at),
        )

    async def ConfirmSaveGameUpload(self, request: pb.ConfirmSaveGameUploadRequest, context):
        confirmed = await self._saves.confirm(current_user_id(), parse_uuid(request.savegame_id))
        return pb.ConfirmSaveGameUploadResponse(
            save_game=save_game_pb(confirmed.save_game),
            outcome=_Outcome.COMMITTED if confirmed.committed else _Outcome.DISCARDED,
            auto_resolved=confirmed.auto_resolved,
            head=save_game_pb(confirmed.head),
        )

    async def RequestSaveGameDownloadURL(self, request: pb.RequestSaveGameDownloadURLRequest, context):
        download = await self._saves.download(current_user_id(), parse_uuid(request.savegame_id))
        return pb.RequestSaveGameDownloadURLResponse(
            download_url=download.download_url,
            expires_at=timestamp(download.expires_at),
            save_game=save_game_pb(download.save_game),
        )

    async def ResolveSaveGameConflict(self, request: pb.ResolveSaveGameConflictRequest, context):
        keep_both = request.resolution == Resolution.KEEP_BOTH
        v = Validator()
        if keep_both and not request.new_slot_name:
            v.fail("new_slot_name", "is required when the resolution is KEEP_BOTH")
        if request.new_slot_name and not keep_both:
            v.fail("new_slot_name", "must be empty unless the resolution is KEEP_BOTH")
        v.check()
        resolved = await self._saves.resolve(
            current_user_id(),
            parse_uuid(request.product_id),
            request.slot_name,
            parse_uuid(request.savegame_id),
            Resolution(request.resolution),
            request.new_slot_name,
            request.etag,
            parse_uuid(request.request_id),
        )
        return pb.ResolveSaveGameConflictResponse(
            slot=slot_pb(resolved.slot), new_slot=slot_pb(resolved.new_slot)
        )

    async def RestoreSaveGameVersion(self, request: pb.RestoreSaveGameVersionRequest, context):
        restored = await self._saves.restore(
            current_user_id(),
            parse_uuid(request.product_id),
            request.slot_name,
            request.version_number,
            request.device_id,
            request.etag,
            parse_uuid(request.request_id),
        )
        return pb.RestoreSaveGameVersionResponse(
            slot=slot_pb(restored.slot), head=save_game_pb(restored.head)
        )
