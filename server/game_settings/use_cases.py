"""Game settings use cases: read the caller's document, and write it (replace or RFC 7386 merge patch)
with an optional etag precondition."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from server.core import replay
from server.core.deps import Deps
from server.core.errors import InvalidArgument
from server.core.events.cloudevents import rfc3339
from server.core.replay import request_key
from server.core.versioned import Values, etag_of
from server.game_settings import repository
from server.game_settings.rules import Document, merge_patch, size_violation
from server.library.entitlements import require_owned

GAME_SETTINGS_UPDATED_NOTIFICATION = "gameSettingsUpdated"
PAYLOAD_FIELD = "settings_payload"


@dataclass(frozen=True, slots=True)
class GameSettingsDocument:
    product_id: uuid.UUID
    etag: str
    settings_payload: dict[str, Any] = field(default_factory=dict)
    last_synced_at: datetime | None = None
    updated_by_device_id: str = ""


@dataclass(frozen=True, slots=True)
class SettingsWrite:
    """What the client asked to write: the whole document, or a merge patch when `merge`."""

    payload: Document
    merge: bool = False
    etag: str = ""
    device_id: str = ""


def _document(product_id: uuid.UUID, found: tuple[int, Values] | None) -> GameSettingsDocument:
    if found is None:
        return GameSettingsDocument(product_id=product_id, etag=etag_of(0))
    version, row = found
    return GameSettingsDocument(
        product_id=product_id,
        etag=etag_of(version),
        settings_payload=row["settings_payload"],
        last_synced_at=row["last_synced_at"],
        updated_by_device_id=row["updated_by_device_id"],
    )


async def get_settings(deps: Deps, user_id: uuid.UUID, product_id: uuid.UUID) -> GameSettingsDocument:
    """The caller's document; a never-written one is empty with the etag of version 0 (nothing stored)."""
    async with deps.uow.read() as db:
        await require_owned(db, user_id, product_id)
        return _document(product_id, await repository.find(db, user_id, product_id))


async def update_settings(
    deps: Deps,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    write: SettingsWrite,
    request_id: uuid.UUID | None,
) -> GameSettingsDocument:
    """Writes the document and tells the caller's devices (`gameSettingsUpdated`, naming the writer).

    With an etag the write is a compare-and-swap against that version: ABORTED ETAG_MISMATCH when the
    document has moved on (also when a concurrent writer wins the race). Without one, a lost race is
    retried on the newer document, so a merge patch never drops a concurrent change. Nothing is written
    when the call fails.
    """
    key = request_key(user_id, "UpdateGameSettings", request_id)
    async with deps.uow() as uow:
        if (first := await replay.claim(uow, key, GameSettingsDocument)) is not None:
            return first
        await require_owned(uow.db, user_id, product_id)
        now = deps.clock()

        def build(current: Values | None) -> Values:
            base = current["settings_payload"] if current is not None else {}
            document = merge_patch(base, write.payload) if write.merge else write.payload
            if (problem := size_violation(document, PAYLOAD_FIELD)) is not None:
                raise InvalidArgument([problem])
            return {
                "settings_payload": document,
                "updated_by_device_id": write.device_id,
                "last_synced_at": now,
            }

        version, values = await repository.write(uow.db, user_id, product_id, etag=write.etag, build=build)
        result = GameSettingsDocument(
            product_id=product_id,
            etag=etag_of(version),
            settings_payload=values["settings_payload"],
            last_synced_at=now,
            updated_by_device_id=write.device_id,
        )
        uow.notify(
            user_id,
            GAME_SETTINGS_UPDATED_NOTIFICATION,
            {
                "productId": str(product_id),
                "etag": result.etag,
                "deviceId": write.device_id,
                "lastSyncedAt": rfc3339(now),
            },
        )
        await replay.remember(uow, key, result)
        await uow.commit()
    return result
