"""Signed, expiring chunk links (presigned S3 GETs), cached in Redis so repeated manifest pages, repairs
and other users of the same chunk don't sign again (seed 001 §4.2.2 `cdn_link:*`).

A link is signed for `download_chunk_url_expiry_seconds` and served from the cache for the first two
thirds of that, so a client always gets at least a third of the lifetime to use it. Links are bearer
credentials: they are never logged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from server.core.s3 import ObjectStore
from server.downloads.chunking import object_key


@dataclass(frozen=True, slots=True)
class ChunkLink:
    url: str
    expires_at: datetime


def _cache_key(chunk_id: str, compressed_sha256: str) -> str:
    return f"dl:chunk-link:{chunk_id}:{compressed_sha256}"


async def chunk_links(
    redis: Redis, store: ObjectStore, objects: Iterable[tuple[str, str]], *, lifetime_seconds: int
) -> dict[tuple[str, str], ChunkLink]:
    """A link per (chunk id, compressed sha256) object, from the cache where it holds one."""
    wanted = list(dict.fromkeys(objects))
    if not wanted:
        return {}
    cached = await redis.mget([_cache_key(*o) for o in wanted])
    links: dict[tuple[str, str], ChunkLink] = {}
    fresh: list[tuple[tuple[str, str], ChunkLink]] = []
    for obj, hit in zip(wanted, cached, strict=True):
        if hit is not None:
            url, _, expires = hit.decode().rpartition(" ")
            links[obj] = ChunkLink(url, datetime.fromtimestamp(int(expires), UTC))
            continue
        signed = await store.presign_get(object_key(*obj), expires_in=lifetime_seconds)
        link = ChunkLink(signed.url, signed.expires_at.replace(microsecond=0))
        links[obj] = link
        fresh.append((obj, link))
    if fresh:
        reuse = max(1, lifetime_seconds * 2 // 3)
        async with redis.pipeline(transaction=False) as pipe:
            for obj, link in fresh:
                pipe.set(_cache_key(*obj), f"{link.url} {int(link.expires_at.timestamp())}", ex=reuse)
            await pipe.execute()
    return links
