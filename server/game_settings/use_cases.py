"""Game settings use cases: read the caller's document, and write it (replace or RFC 7386 merge patch)
with an optional etag precondition."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from server.core import replay
from server.core.deps import Deps
from server.core.errors import Aborted, InvalidArgument
from server.core.events.cloudevents import rfc3339
from server.core.replay import request_key
from server.game_settings import repository
from server.game_settings.rules import Document, etag_of, merge_patch, size_violation
from server.game_settings.tables import UserGameSetting
from server.library.entitlements import require_owned

GAME_SETTINGS_UPDATED_NOTIFICATION = "gameSettingsUpdated"
PAYLOAD_FIELD = "settings_payload"
# Unconditional writes retry their compare-and-swap when a concurrent write won; this many rounds of
# losing in a row means the document is being hammered, and the caller should retry later.
MAX_SWAP_ATTEMPTS = 5


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


def _document(product_id: uuid.UUID, row: UserGameSetting | None) -> GameSettingsDocument:
    if row is None:
        return GameSettingsDocument(product_id=product_id, etag=etag_of(0))
    return GameSettingsDocument(
        product_id=product_id,
        etag=etag_of(row.version),
        settings_payload=row.settings_payload,
        last_synced_at=row.last_synced_at,
        updated_by_device_id=row.updated_by_device_id,
    )


async def get_settings(deps: Deps, user_id: uuid.UUID, product_id: uuid.UUID) -> GameSettingsDocument:
    """The caller's document; a never-written one is empty with the etag of version 0 (nothing stored)."""
    async with deps.uow() as uow:
        await require_owned(uow.session, user_id, product_id)
        return _document(product_id, await repository.find(uow.session, user_id, product_id))


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
        session = uow.session
        if (first := await replay.claim(uow, key, GameSettingsDocument)) is not None:
            return first
        await require_owned(session, user_id, product_id)
        for _ in range(MAX_SWAP_ATTEMPTS):
            current = await repository.find(session, user_id, product_id)
            version = current.version if current is not None else 0
            if write.etag and write.etag != etag_of(version):
                raise _etag_mismatch(version)
            base = current.settings_payload if current is not None else {}
            document = merge_patch(base, write.payload) if write.merge else write.payload
            if (problem := size_violation(document, PAYLOAD_FIELD)) is not None:
                raise InvalidArgument([problem])
            now = deps.clock()
            swapped = await repository.swap(
                session,
                user_id,
                product_id,
                expected_version=version,
                payload=document,
                device_id=write.device_id,
                now=now,
            )
            if swapped:
                break
            # Lost the race: the next round reads the winner's version (with an etag: ETAG_MISMATCH).
        else:
            raise Aborted(
                "the settings kept changing concurrently; retry", metadata={"productId": str(product_id)}
            )
        result = GameSettingsDocument(
            product_id=product_id,
            etag=etag_of(version + 1),
            settings_payload=document,
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


def _etag_mismatch(version: int) -> Aborted:
    return Aborted(
        "the settings changed since the etag was read; get them again and retry",
        metadata={"currentEtag": etag_of(version)},
    )
