"""Published versions for the download-session tests: rows inserted directly, as a committed publication
leaves them (the publishing protocol itself, with S3 and the verifier, is tested by the content tests).

A version is given as {path: [chunk content, ...]}; chunk ids are the SHA-256 of the content and the
"compressed" size is half the size (what a plan counts is the compressed size of the chunks a client
lacks)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.downloads.content_tables import (
    STATE_COMMITTED,
    FileChunk,
    ProductVersion,
    VersionChunk,
    VersionFile,
)


def compressed_size(content: bytes) -> int:
    return max(1, len(content) // 2)


def _compressed_sha256(content: bytes) -> str:
    return hashlib.sha256(b"z" + content).hexdigest()


@dataclass(frozen=True)
class Published:
    version_id: uuid.UUID
    download_bytes: int  # compressed size of its distinct chunks
    file_ids: dict[str, uuid.UUID]
    sizes: dict[str, int]


async def publish(
    sessions: async_sessionmaker[AsyncSession],
    product_id: uuid.UUID,
    files: dict[str, list[bytes]],
    *,
    name: str | None = None,
    branch: str = "public",
    published_at: datetime | None = None,
) -> Published:
    version_id = uuid.uuid4()
    distinct: dict[str, bytes] = {}
    file_ids, sizes = {}, {}
    async with sessions() as session, session.begin():
        session.add(
            ProductVersion(
                version_id=version_id,
                product_id=product_id,
                version_name=name or f"v-{version_id.hex[:8]}",
                branch=branch,
                release_notes="",
                state=STATE_COMMITTED,
                total_size_bytes=sum(len(c) for chunks in files.values() for c in chunks),
                file_count=len(files),
                chunk_count=sum(len(chunks) for chunks in files.values()),
                published_at=published_at or datetime.now(UTC),
            )
        )
        await session.flush()
        for path, chunks in files.items():
            content = b"".join(chunks)
            file_id = uuid.uuid4()
            file_ids[path], sizes[path] = file_id, len(content)
            session.add(
                VersionFile(
                    file_id=file_id,
                    version_id=version_id,
                    path=path,
                    size_bytes=len(content),
                    sha256=hashlib.sha256(content).hexdigest(),
                )
            )
            await session.flush()
            offset = 0
            for position, chunk in enumerate(chunks):
                chunk_id = hashlib.sha256(chunk).hexdigest()
                distinct[chunk_id] = chunk
                session.add(
                    FileChunk(
                        file_id=file_id,
                        position=position,
                        chunk_id=chunk_id,
                        offset=offset,
                        size_bytes=len(chunk),
                        compressed_size_bytes=compressed_size(chunk),
                        compressed_sha256=_compressed_sha256(chunk),
                    )
                )
                offset += len(chunk)
        session.add_all(
            VersionChunk(
                version_id=version_id,
                chunk_id=chunk_id,
                size_bytes=len(chunk),
                compressed_size_bytes=compressed_size(chunk),
                compressed_sha256=_compressed_sha256(chunk),
            )
            for chunk_id, chunk in distinct.items()
        )
    return Published(version_id, sum(compressed_size(c) for c in distinct.values()), file_ids, sizes)


MiB = 1024 * 1024


async def publish_bulk(
    sessions: async_sessionmaker[AsyncSession],
    product_id: uuid.UUID,
    *,
    files: int,
    chunks_per_file: int,
    variant: str = "",
    every: int = 0,
    published_at: datetime | None = None,
) -> uuid.UUID:
    """A big committed version inserted in a few set-based statements (no bytes): `files` files of
    `chunks_per_file` chunks of 1 MiB (compressed 512 KiB), all distinct. With `variant`, the first chunk
    of every `every`-th file (and so that file's content) differs from the version without it."""
    version_id = uuid.uuid4()
    differs = "(:every > 0 AND f % :every = 0 AND c = 0)"
    params = {
        "version": version_id,
        "product": product_id,
        "seed": str(product_id),
        "variant": variant,
        "every": every,
        "files": files,
        "per": chunks_per_file,
        "mib": MiB,
    }
    cut = (
        "SELECT f, c, encode(sha256(convert_to(:seed || ':' || "
        f"CASE WHEN {differs} THEN :variant ELSE '' END || ':' || f || ':' || c, 'UTF8')), 'hex') AS chunk "
        "FROM generate_series(0, :files - 1) f, generate_series(0, :per - 1) c"
    )
    async with sessions() as session, session.begin():
        session.add(
            ProductVersion(
                version_id=version_id,
                product_id=product_id,
                version_name=f"bulk-{version_id.hex[:8]}",
                branch="public",
                release_notes="",
                state=STATE_COMMITTED,
                total_size_bytes=files * chunks_per_file * MiB,
                file_count=files,
                chunk_count=files * chunks_per_file,
                published_at=published_at or datetime.now(UTC),
            )
        )
        await session.flush()
        await session.execute(
            text(
                "INSERT INTO download_version_files (file_id, version_id, path, size_bytes, sha256) "
                "SELECT gen_random_uuid(), :version, 'data/file-' || lpad(f::text, 6, '0'), :per * :mib, "
                "encode(sha256(convert_to(:seed || ':' || CASE WHEN :every > 0 AND f % :every = 0 "
                "THEN :variant ELSE '' END || ':' || f, 'UTF8')), 'hex') "
                "FROM generate_series(0, :files - 1) f"
            ),
            params,
        )
        await session.execute(
            text(
                'INSERT INTO download_file_chunks (file_id, position, chunk_id, "offset", size_bytes, '
                "compressed_size_bytes, compressed_sha256) "
                "SELECT vf.file_id, s.c, s.chunk, s.c * :mib, :mib, :mib / 2, s.chunk "
                f"FROM ({cut}) s JOIN download_version_files vf "
                "ON vf.version_id = :version AND vf.path = 'data/file-' || lpad(s.f::text, 6, '0')"
            ),
            params,
        )
        await session.execute(
            text(
                "INSERT INTO download_version_chunks (version_id, chunk_id, size_bytes, "
                "compressed_size_bytes, compressed_sha256) "
                f"SELECT :version, s.chunk, :mib, :mib / 2, s.chunk FROM ({cut}) s"
            ),
            params,
        )
    return version_id
