"""Helpers of the game settings tests: calls as one user, and the stored row behind a document."""

from __future__ import annotations

import uuid
from typing import Any

from google.protobuf import json_format, struct_pb2
from sqlalchemy import select

from client.sdk.settings import integral_numbers
from library.v1 import game_settings_service_pb2 as pb
from server.game_settings.tables import UserGameSetting
from tests.support.auth import user_metadata


def struct(document: dict[str, Any]) -> struct_pb2.Struct:
    value = struct_pb2.Struct()
    value.update(document)
    return value


def payload(settings: pb.GameSettings) -> dict[str, Any]:
    """The document as JSON (integral numbers as integers, as the REST edge prints them)."""
    return integral_numbers(json_format.MessageToDict(settings.settings_payload))


async def get(stub, user: uuid.UUID, product: uuid.UUID) -> pb.GameSettings:
    reply = await stub.GetGameSettings(
        pb.GetGameSettingsRequest(product_id=str(product)), metadata=user_metadata(user)
    )
    return reply.game_settings


def put(stub, user: uuid.UUID, product: uuid.UUID, document: dict[str, Any] | None, **fields):
    """UpdateGameSettings as `user` (an awaitable); `document=None` leaves settings_payload unset."""
    request = pb.UpdateGameSettingsRequest(product_id=str(product), **fields)
    if document is not None:
        request.settings_payload.CopyFrom(struct(document))
    return stub.UpdateGameSettings(request, metadata=user_metadata(user))


async def stored(sessions, user: uuid.UUID, product: uuid.UUID) -> tuple[dict[str, Any], int] | None:
    """(payload, version) of the row, or None when nothing is stored."""
    async with sessions() as session:
        row = await session.scalar(
            select(UserGameSetting).where(
                UserGameSetting.user_id == user, UserGameSetting.product_id == product
            )
        )
    return None if row is None else (row.settings_payload, row.version)
