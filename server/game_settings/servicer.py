"""GameSettingsSyncService transport: validate the request, map proto ⇄ domain, call a use case. Nothing
else."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

from library.v1 import game_settings_service_pb2 as pb
from library.v1 import game_settings_service_pb2_grpc
from server.core.auth import current_user_id
from server.core.deps import Deps
from server.core.errors import InvalidArgument
from server.core.protoconv import timestamp
from server.core.validation import parse_uuid
from server.game_settings import use_cases
from server.game_settings.rules import storable
from server.game_settings.use_cases import PAYLOAD_FIELD, GameSettingsDocument, SettingsWrite


def _json_of(value: struct_pb2.Value) -> Any:
    """A Struct value as plain JSON data, NaN and all (json_format refuses those; `storable` names them)."""
    match value.WhichOneof("kind"):
        case "struct_value":
            return {key: _json_of(item) for key, item in value.struct_value.fields.items()}
        case "list_value":
            return [_json_of(item) for item in value.list_value.values]
        case "number_value":
            return value.number_value
        case "string_value":
            return value.string_value
        case "bool_value":
            return value.bool_value
    return None  # null_value, or no kind set


def _settings_pb(document: GameSettingsDocument) -> pb.GameSettings:
    payload = struct_pb2.Struct()
    payload.update(document.settings_payload)
    return pb.GameSettings(
        product_id=str(document.product_id),
        settings_payload=payload,
        etag=document.etag,
        last_synced_at=timestamp(document.last_synced_at),
        updated_by_device_id=document.updated_by_device_id,
    )


class GameSettingsSyncServiceServicer(game_settings_service_pb2_grpc.GameSettingsSyncServiceServicer):
    def __init__(self, deps: Deps):
        self._deps = deps

    async def GetGameSettings(self, request: pb.GetGameSettingsRequest, context):
        document = await use_cases.get_settings(self._deps, current_user_id(), parse_uuid(request.product_id))
        return pb.GetGameSettingsResponse(game_settings=_settings_pb(document))

    async def UpdateGameSettings(self, request: pb.UpdateGameSettingsRequest, context):
        # The contract's rules (UUIDs, lengths, the device id's characters, NUL anywhere) ran already.
        payload, problems = storable(
            {key: _json_of(item) for key, item in request.settings_payload.fields.items()}, PAYLOAD_FIELD
        )
        if problems:
            raise InvalidArgument(problems)
        write = SettingsWrite(
            payload=payload, merge=request.merge, etag=request.etag, device_id=request.device_id
        )
        document = await use_cases.update_settings(
            self._deps,
            current_user_id(),
            parse_uuid(request.product_id),
            write,
            parse_uuid(request.request_id),
        )
        return pb.UpdateGameSettingsResponse(game_settings=_settings_pb(document))
