"""Game settings: the caller's JSON settings document per product, with etags (GameSettingsSyncService)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2

from client.sdk.connection import Connection, default_device_id, new_request_id
from library.v1 import game_settings_service_pb2 as pb
from library.v1 import game_settings_service_pb2_grpc


@dataclass(frozen=True)
class GameSettings:
    product_id: str
    settings: dict[str, Any]
    etag: str
    last_synced_at: datetime | None
    updated_by_device_id: str

    @classmethod
    def from_pb(cls, message: pb.GameSettings) -> GameSettings:
        return cls(
            product_id=message.product_id,
            settings=integral_numbers(json_format.MessageToDict(message.settings_payload)),
            etag=message.etag,
            last_synced_at=(
                message.last_synced_at.ToDatetime(tzinfo=UTC) if message.HasField("last_synced_at") else None
            ),
            updated_by_device_id=message.updated_by_device_id,
        )


def integral_numbers(value: Any) -> Any:
    """JSON numbers travel as doubles in a Struct; whole ones are shown as integers again."""
    if isinstance(value, dict):
        return {k: integral_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class SettingsClient:
    def __init__(self, connection: Connection, *, device_id: str | None = None) -> None:
        self._connection = connection
        self._stub = game_settings_service_pb2_grpc.GameSettingsSyncServiceStub(connection.channel)
        self.device_id = device_id or default_device_id()

    async def get(self, product_id: str) -> GameSettings:
        reply = await self._connection.call(
            self._stub.GetGameSettings, pb.GetGameSettingsRequest(product_id=product_id)
        )
        return GameSettings.from_pb(reply.game_settings)

    async def replace(self, product_id: str, document: dict[str, Any], *, etag: str = "") -> GameSettings:
        """Stores `document` as the whole settings; with `etag`, only if nothing changed since."""
        return await self._update(product_id, document, etag=etag, merge=False)

    async def patch(self, product_id: str, patch: dict[str, Any], *, etag: str = "") -> GameSettings:
        """Applies an RFC 7386 merge patch (nested objects merge, `None` deletes a key)."""
        return await self._update(product_id, patch, etag=etag, merge=True)

    async def _update(
        self, product_id: str, document: dict[str, Any], *, etag: str, merge: bool
    ) -> GameSettings:
        payload = struct_pb2.Struct()
        payload.update(document)
        request = pb.UpdateGameSettingsRequest(
            product_id=product_id,
            settings_payload=payload,
            etag=etag,
            merge=merge,
            device_id=self.device_id,
            request_id=new_request_id(),  # one id for every retry: the server applies it once
        )
        reply = await self._connection.call(self._stub.UpdateGameSettings, request)
        return GameSettings.from_pb(reply.game_settings)
