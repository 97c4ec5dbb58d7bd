"""Signed, expiring chunk links (presigned S3 GETs), cached in Redis so repeated manifest pages and
repairs don't sign again (seed 001 §4.2.2 `cdn_link:*`).

The cache holds one entry per file of a version (its chunk list never changes once committed): a page of
a manifest reads a few keys, not one per chunk. A link is signed for `download_chunk_url_expiry_seconds`
and served from the cache for the first two thirds of that, so a client always gets at least a third of
the lifetime to use it. Links are bearer credentials: they are never logged.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from content_store.chunking import object_key
from server.core.redis import RedisClient, mget
from server.core.s3 import ObjectStore


@dataclass(frozen=True, slots=True)
class ChunkLink:
    url: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class FileLinks:
    """A file's chunk links, one per chunk in the file's order, all signed at once (one expiry)."""

    urls: list[str]
    expires_at: datetime | None  # None: the file has no chunks


def _cache_key(file_id: uuid.UUID) -> str:
    return f"dl:chunk-links:{file_id}"


def _decode(value: bytes, count: int) -> FileLinks | None:
    expires, *urls = value.decode().split("\n")
    if len(urls) != count:
        return None
    return FileLinks(urls, datetime.fromtimestamp(int(expires), UTC))


async def file_links(
    redis: RedisClient,
    store: ObjectStore,
    files: Mapping[uuid.UUID, Sequence[Sequence]],
    *,
    lifetime_seconds: int,
) -> dict[uuid.UUID, FileLinks]:
    """For each file, the links of its chunks, given as rows that begin (chunk_id, compressed_sha256) in
    the file's chunk order (a file without chunks has none)."""
    ids = [file_id for file_id, chunks in files.items() if chunks]
    links: dict[uuid.UUID, FileLinks] = {file_id: FileLinks([], None) for file_id in files}
    if not ids:
        return links
    cached = await mget(redis, [_cache_key(file_id) for file_id in ids])
    unsigned = []
    for file_id, hit in zip(ids, cached, strict=True):
        found = _decode(hit, len(files[file_id])) if hit is not None else None
        if found is None:
            unsigned.append(file_id)
        else:
            links[file_id] = found
    if unsigned:
        reuse = max(1, lifetime_seconds * 2 // 3)
        async with redis.pipeline(transaction=False) as pipe:
            for file_id in unsigned:
                keys = [object_key(c[0], c[1]) for c in files[file_id]]
                signed = store.presign_gets(keys, expires_in=lifetime_seconds)
                urls = [s.url for s in signed]
                links[file_id] = FileLinks(urls, signed[0].expires_at)
                expires = int(signed[0].expires_at.timestamp())
                pipe.set(_cache_key(file_id), "\n".join([str(expires), *urls]), ex=reuse)
            await pipe.execute()
    return links
