"""Helpers of the cloud-save tests: a save file, the three upload steps as a game client makes them (the PUT
goes to the real store), and what the database and S3 hold for one user's product."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from google.protobuf import timestamp_pb2
from sqlalchemy import select

from library.v1 import cloud_save_service_pb2 as pb
from server.cloud_saves.rules import HELD
from server.cloud_saves.tables import ObjectDeletion, SaveGameRow
from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.core.deps import Deps
from server.core.redis import redis_from_settings
from server.core.s3 import ObjectStore
from server.core.uow import UnitOfWorkFactory
from tests.support.auth import user_metadata

UPLOADED = "com.platform.library.savegame.uploaded.v1"
Policy = pb.RequestSaveGameUploadURLRequest.ConflictPolicy


@dataclass(frozen=True)
class SaveFile:
    body: bytes

    @classmethod
    def random(cls, size: int = 2048) -> SaveFile:
        return cls(os.urandom(size))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


def upload_request(
    product_id: uuid.UUID, slot: str, save: SaveFile, *, base: int = 0, device: str = "pc", **fields
) -> pb.RequestSaveGameUploadURLRequest:
    modified = timestamp_pb2.Timestamp()
    modified.FromDatetime(fields.pop("modified_at", datetime.now(UTC)))
    return pb.RequestSaveGameUploadURLRequest(
        product_id=str(product_id),
        slot_name=slot,
        file_size_bytes=len(save.body),
        file_hash_sha256=save.sha256,
        base_version=base,
        client_modified_at=modified,
        device_id=device,
        **fields,
    )


async def put(
    ticket: pb.RequestSaveGameUploadURLResponse, body: bytes, **header_overrides: str
) -> httpx.Response:
    """The client's PUT to the presigned URL with the required headers (overrides simulate a bad client)."""
    headers = {**dict(ticket.required_headers), **header_overrides}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.put(ticket.upload_url, content=body, headers=headers)


async def push(
    stub, user_id: uuid.UUID, product_id: uuid.UUID, slot: str, save: SaveFile, *, base: int = 0, **fields
) -> pb.ConfirmSaveGameUploadResponse:
    """Upload URL → PUT → confirm; the PUT must succeed."""
    metadata = user_metadata(user_id)
    ticket = await stub.RequestSaveGameUploadURL(
        upload_request(product_id, slot, save, base=base, **fields), metadata=metadata
    )
    response = await put(ticket, save.body)
    assert response.status_code == 200, response.text
    return await stub.ConfirmSaveGameUpload(
        pb.ConfirmSaveGameUploadRequest(savegame_id=ticket.savegame_id), metadata=metadata
    )


async def fetch(stub, user_id: uuid.UUID, savegame_id: str) -> bytes:
    link = await stub.RequestSaveGameDownloadURL(
        pb.RequestSaveGameDownloadURLRequest(savegame_id=savegame_id), metadata=user_metadata(user_id)
    )
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(link.download_url)
    assert response.status_code == 200
    return response.content


async def listing(stub, user_id: uuid.UUID, product_id: uuid.UUID) -> pb.ListSaveGamesResponse:
    return await stub.ListSaveGames(
        pb.ListSaveGamesRequest(product_id=str(product_id)), metadata=user_metadata(user_id)
    )


async def rows(sessions, user_id: uuid.UUID, product_id: uuid.UUID) -> list[SaveGameRow]:
    async with sessions() as session:
        found = await session.scalars(
            select(SaveGameRow).where(SaveGameRow.user_id == user_id, SaveGameRow.product_id == product_id)
        )
        return list(found)


async def referenced_keys(sessions, user_id: uuid.UUID, product_id: uuid.UUID) -> list[str]:
    """Object keys the database references for the user's product (rows that hold an object)."""
    return sorted(r.s3_object_key for r in await rows(sessions, user_id, product_id) if r.status in HELD)


async def queued_keys(sessions, user_id: uuid.UUID, product_id: uuid.UUID) -> list[str]:
    async with sessions() as session:
        found = await session.scalars(
            select(ObjectDeletion.s3_object_key).where(
                ObjectDeletion.s3_object_key.startswith(f"saves/{user_id}/{product_id}/")
            )
        )
        return sorted(found)


async def stored_keys(store: ObjectStore, user_id: uuid.UUID, product_id: uuid.UUID) -> list[str]:
    return await store.keys(f"saves/{user_id}/{product_id}/")


@contextlib.asynccontextmanager
async def in_process(settings: Settings, *, store: ObjectStore | None = None) -> AsyncIterator[Deps]:
    """The service's dependencies in the test process (for a worker pass with a controlled clock)."""
    engine = create_engine(settings.database_url, pool_size=2)
    redis = redis_from_settings(settings, timeout=5.0)
    own_store = store is None
    store = store or await ObjectStore(settings).open()
    try:
        yield Deps(
            settings, UnitOfWorkFactory(create_sessionmaker(engine), "/test", lambda: None), redis, store
        )
    finally:
        if own_store:
            await store.close()
        await redis.aclose()
        await engine.dispose()
