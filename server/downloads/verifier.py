"""The chunk verifier: reads a newly stored chunk object back from S3, decompresses it and hashes it.

Only an object whose compressed bytes hash to the SHA-256 in its key, and whose content is exactly the
declared size and hashes to the chunk id, may be marked verified; anything else is deleted, so a forged
upload never becomes part of the shared store.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from content_store.chunking import ChunkContentError, chunk_id, decompress_chunk, object_key
from server.core.s3 import ObjectStore
from server.downloads.content_repository import PendingChunk

# Chunks read and checked at once (each holds up to one compressed chunk in memory).
VERIFY_CONCURRENCY = 8


class Outcome(enum.Enum):
    VERIFIED = "verified"
    MISSING = "missing"  # nothing uploaded yet
    FORGED = "forged"  # uploaded, but not the chunk it claims to be (deleted)


@dataclass(frozen=True, slots=True)
class Verdict:
    chunk: PendingChunk
    outcome: Outcome
    compressed_size: int = 0


def _check(chunk: PendingChunk, blob: bytes) -> bool:
    """CPU part (runs in a thread: hashlib and zstandard release the GIL)."""
    if hashlib.sha256(blob).hexdigest() != chunk.compressed_sha256:
        return False
    try:
        content = decompress_chunk(blob, chunk.size_bytes)
    except ChunkContentError:
        return False
    return chunk_id(content) == chunk.chunk_id


async def verify_one(store: ObjectStore, chunk: PendingChunk) -> Verdict:
    key = object_key(chunk.chunk_id, chunk.compressed_sha256)
    blob = await store.get(key)
    if blob is None:
        return Verdict(chunk, Outcome.MISSING)
    if not await asyncio.to_thread(_check, chunk, blob):
        await store.delete(key)
        return Verdict(chunk, Outcome.FORGED)
    return Verdict(chunk, Outcome.VERIFIED, len(blob))


async def verify_all(store: ObjectStore, chunks: Sequence[PendingChunk]) -> list[Verdict]:
    gate = asyncio.Semaphore(VERIFY_CONCURRENCY)

    async def bounded(chunk: PendingChunk) -> Verdict:
        async with gate:
            return await verify_one(store, chunk)

    return list(await asyncio.gather(*(bounded(c) for c in chunks)))


async def uploaded(store: ObjectStore, chunks: Sequence[PendingChunk]) -> set[str]:
    """Ids of the chunks whose declared object is already in the store with the declared length and
    SHA-256 (uploaded by an interrupted run, waiting for the commit to verify it)."""
    gate = asyncio.Semaphore(VERIFY_CONCURRENCY * 4)

    async def present(chunk: PendingChunk) -> bool:
        async with gate:
            found = await store.head(object_key(chunk.chunk_id, chunk.compressed_sha256))
        return (
            found is not None
            and found.size == chunk.compressed_size_bytes
            and found.sha256_hex in (None, chunk.compressed_sha256)
        )

    flags = await asyncio.gather(*(present(c) for c in chunks))
    return {c.chunk_id for c, flag in zip(chunks, flags, strict=True) if flag}
