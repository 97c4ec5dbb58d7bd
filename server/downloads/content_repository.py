"""SQL of the chunk store and published content (the only module that queries content_tables)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, exists, false, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.downloads.chunking import FileEntry
from server.downloads.content_tables import (
    STATE_COMMITTED,
    FileChunk,
    ProductVersion,
    StoredChunk,
    VersionChunk,
    VersionFile,
)


@dataclass(frozen=True, slots=True)
class PendingChunk:
    """A distinct chunk of a version with the object its publisher declared for it."""

    chunk_id: str
    compressed_sha256: str
    size_bytes: int
    compressed_size_bytes: int


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """A chunk occurrence in a file, with the object that serves it (for manifests and repairs)."""

    file_id: uuid.UUID
    position: int
    chunk_id: str
    offset: int
    size_bytes: int
    compressed_size_bytes: int
    compressed_sha256: str


async def version_by_name(
    session: AsyncSession, product_id: uuid.UUID, version_name: str
) -> ProductVersion | None:
    """The version row, locked for the rest of the transaction."""
    return await session.scalar(
        select(ProductVersion)
        .where(ProductVersion.product_id == product_id, ProductVersion.version_name == version_name)
        .with_for_update()
    )


async def claim_version(session: AsyncSession, row: ProductVersion) -> ProductVersion:
    """Inserts the version unless (product, name) exists; either way returns the locked row."""
    await session.execute(
        pg_insert(ProductVersion)
        .values(
            version_id=row.version_id,
            product_id=row.product_id,
            version_name=row.version_name,
            branch=row.branch,
            release_notes=row.release_notes,
            state=row.state,
            total_size_bytes=row.total_size_bytes,
            file_count=row.file_count,
            chunk_count=row.chunk_count,
        )
        .on_conflict_do_nothing(index_elements=["product_id", "version_name"])
    )
    claimed = await version_by_name(session, row.product_id, row.version_name)
    assert claimed is not None
    return claimed


async def version(
    session: AsyncSession, version_id: uuid.UUID, *, lock: bool = False
) -> ProductVersion | None:
    query = select(ProductVersion).where(ProductVersion.version_id == version_id)
    if lock:
        query = query.with_for_update()
    return await session.scalar(query)


async def replace_files(session: AsyncSession, version_id: uuid.UUID, files: Sequence[FileEntry]) -> None:
    """The version's files, chunk lists and distinct chunks become exactly `files` (a resumed upload may
    declare a different build under the same name)."""
    await session.execute(delete(VersionFile).where(VersionFile.version_id == version_id))
    await session.execute(delete(VersionChunk).where(VersionChunk.version_id == version_id))
    file_rows, chunk_rows, distinct = [], [], {}
    for entry in files:
        file_id = uuid.uuid4()
        file_rows.append(
            {"file_id": file_id, "version_id": version_id, "path": entry.path, "size_bytes": entry.size}
            | {"sha256": entry.sha256}
        )
        for position, ref in enumerate(entry.chunks):
            chunk_rows.append(
                {"file_id": file_id, "position": position, "chunk_id": ref.chunk_id}
                | {"offset": ref.offset, "size_bytes": ref.size}
            )
            distinct.setdefault(
                ref.chunk_id,
                {
                    "version_id": version_id,
                    "chunk_id": ref.chunk_id,
                    "size_bytes": ref.size,
                    "compressed_size_bytes": ref.compressed_size,
                    "compressed_sha256": ref.compressed_sha256,
                },
            )
    await session.execute(insert(VersionFile), file_rows)
    if chunk_rows:
        await session.execute(insert(FileChunk), chunk_rows)
        await session.execute(insert(VersionChunk), list(distinct.values()))
        await session.execute(
            pg_insert(StoredChunk)
            .values(
                [
                    {key: row[key] for key in ("chunk_id", "compressed_sha256", "size_bytes")}
                    | {"compressed_size_bytes": row["compressed_size_bytes"]}
                    for row in distinct.values()
                ]
            )
            .on_conflict_do_nothing()
        )


def _verified_exists(chunk_id_column):
    return exists().where(StoredChunk.chunk_id == chunk_id_column, StoredChunk.verified.is_(True))


async def unverified_chunks(session: AsyncSession, version_id: uuid.UUID) -> list[PendingChunk]:
    """The version's distinct chunks that have no verified object in the store yet."""
    rows = await session.execute(
        select(
            VersionChunk.chunk_id,
            VersionChunk.compressed_sha256,
            VersionChunk.size_bytes,
            VersionChunk.compressed_size_bytes,
        )
        .where(VersionChunk.version_id == version_id, ~_verified_exists(VersionChunk.chunk_id))
        .order_by(VersionChunk.chunk_id)
    )
    return [PendingChunk(*row) for row in rows]


async def distinct_chunk_count(session: AsyncSession, version_id: uuid.UUID) -> int:
    return await session.scalar(
        select(func.count()).select_from(VersionChunk).where(VersionChunk.version_id == version_id)
    )


async def mark_verified(
    session: AsyncSession, chunks: Iterable[tuple[PendingChunk, int]], now: datetime
) -> None:
    """Marks objects verified, each with the compressed size found in the store; a row verified before
    stays as it was."""
    for chunk, compressed_size in chunks:
        await session.execute(
            update(StoredChunk)
            .where(
                StoredChunk.chunk_id == chunk.chunk_id,
                StoredChunk.compressed_sha256 == chunk.compressed_sha256,
                StoredChunk.verified.is_(False),
            )
            .values(verified=True, verified_at=now, compressed_size_bytes=compressed_size)
        )


async def forget_unverified(session: AsyncSession, chunks: Sequence[PendingChunk]) -> None:
    """Drops the declarations of objects found forged (never a verified row)."""
    if chunks:
        await session.execute(
            delete(StoredChunk).where(
                StoredChunk.verified.is_(False),
                or_(
                    *(
                        and_(
                            StoredChunk.chunk_id == c.chunk_id,
                            StoredChunk.compressed_sha256 == c.compressed_sha256,
                        )
                        for c in chunks
                    )
                ),
            )
        )


async def adopt_verified_objects(session: AsyncSession, version_id: uuid.UUID) -> None:
    """Points each distinct chunk of the version at a verified object (the smallest), whose sizes
    transfer plans and manifests then read from this table alone."""
    best = (
        select(StoredChunk.chunk_id, StoredChunk.compressed_sha256, StoredChunk.compressed_size_bytes)
        .where(StoredChunk.verified.is_(True))
        .distinct(StoredChunk.chunk_id)
        .order_by(StoredChunk.chunk_id, StoredChunk.compressed_size_bytes, StoredChunk.compressed_sha256)
        .subquery()
    )
    await session.execute(
        update(VersionChunk)
        .where(VersionChunk.version_id == version_id, VersionChunk.chunk_id == best.c.chunk_id)
        .values(
            compressed_sha256=best.c.compressed_sha256,
            compressed_size_bytes=best.c.compressed_size_bytes,
        )
    )


async def latest_committed(
    session: AsyncSession, product_id: uuid.UUID, branch: str
) -> ProductVersion | None:
    return await session.scalar(
        select(ProductVersion)
        .where(
            ProductVersion.product_id == product_id,
            ProductVersion.branch == branch,
            ProductVersion.state == STATE_COMMITTED,
        )
        .order_by(ProductVersion.published_at.desc(), ProductVersion.version_id.desc())
        .limit(1)
    )


async def committed_version(
    session: AsyncSession, product_id: uuid.UUID, version_id: uuid.UUID
) -> ProductVersion | None:
    return await session.scalar(
        select(ProductVersion).where(
            ProductVersion.version_id == version_id,
            ProductVersion.product_id == product_id,
            ProductVersion.state == STATE_COMMITTED,
        )
    )


async def download_size(session: AsyncSession, version_id: uuid.UUID) -> int:
    return await session.scalar(
        select(func.coalesce(func.sum(VersionChunk.compressed_size_bytes), 0)).where(
            VersionChunk.version_id == version_id
        )
    )


async def list_committed(
    session: AsyncSession,
    product_id: uuid.UUID,
    branch: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> tuple[list[tuple[ProductVersion, int]], int]:
    """A page of committed versions (newest first) with each one's download size, and the total count."""
    where = [ProductVersion.product_id == product_id, ProductVersion.state == STATE_COMMITTED]
    if branch:
        where.append(ProductVersion.branch == branch)
    total = await session.scalar(select(func.count()).select_from(ProductVersion).where(*where))
    size = (
        select(func.coalesce(func.sum(VersionChunk.compressed_size_bytes), 0))
        .where(VersionChunk.version_id == ProductVersion.version_id)
        .scalar_subquery()
    )
    query = select(ProductVersion, size).where(*where)
    if after is not None:
        query = query.where(
            (ProductVersion.published_at, ProductVersion.version_id) < (after[0], after[1])  # type: ignore[operator]
        )
    rows = await session.execute(
        query.order_by(ProductVersion.published_at.desc(), ProductVersion.version_id.desc()).limit(limit)
    )
    return [(row[0], row[1]) for row in rows], total


async def latest_ids(session: AsyncSession, product_id: uuid.UUID) -> set[uuid.UUID]:
    """The latest committed version of each of the product's branches."""
    rows = await session.scalars(
        select(ProductVersion.version_id)
        .where(ProductVersion.product_id == product_id, ProductVersion.state == STATE_COMMITTED)
        .distinct(ProductVersion.branch)
        .order_by(ProductVersion.branch, ProductVersion.published_at.desc(), ProductVersion.version_id.desc())
    )
    return set(rows)


# -- transfer plans --------------------------------------------------------------------------------------


async def chunks_to_fetch_totals(
    session: AsyncSession, version_id: uuid.UUID, had: HadChunks
) -> tuple[int, int]:
    """(compressed bytes, count) of the version's distinct chunks the client lacks."""
    row = (
        await session.execute(
            text(
                "SELECT coalesce(sum(vc.compressed_size_bytes), 0), count(*) "
                "FROM download_version_chunks vc WHERE vc.version_id = :target "
                f"AND NOT EXISTS ({had.sql} AND h.chunk_id = vc.chunk_id)"
            ),
            {"target": version_id, **had.params},
        )
    ).one()
    return int(row[0]), int(row[1])


async def files_to_write_totals(
    session: AsyncSession, version_id: uuid.UUID, had: HadFiles
) -> tuple[int, int]:
    """(bytes, count) of the version's files whose content the client does not have at their path."""
    row = (
        await session.execute(
            text(
                "SELECT coalesce(sum(f.size_bytes), 0), count(*) FROM download_version_files f "
                f"WHERE f.version_id = :target AND NOT EXISTS ({had.sql} "
                "AND h.path = f.path AND h.sha256 = f.sha256)"
            ),
            {"target": version_id, **had.params},
        )
    ).one()
    return int(row[0]), int(row[1])


@dataclass(frozen=True, slots=True)
class HadChunks:
    """A correlated `SELECT 1 FROM … h WHERE …` over the chunk ids a client already has (alias h)."""

    sql: str
    params: dict


@dataclass(frozen=True, slots=True)
class HadFiles:
    """A correlated `SELECT 1 FROM … h WHERE …` over the (path, sha256) a client already has (alias h)."""

    sql: str
    params: dict


NOTHING_HAD_CHUNKS = HadChunks("SELECT 1 FROM (SELECT NULL::text AS chunk_id) h WHERE false", {})
NOTHING_HAD_FILES = HadFiles(
    "SELECT 1 FROM (SELECT NULL::text AS path, NULL::text AS sha256) h WHERE false", {}
)


def had_chunks_of_version(installed_version_id: uuid.UUID) -> HadChunks:
    return HadChunks(
        "SELECT 1 FROM download_version_chunks h WHERE h.version_id = :installed",
        {"installed": installed_version_id},
    )


def had_files_of_version(installed_version_id: uuid.UUID) -> HadFiles:
    return HadFiles(
        "SELECT 1 FROM download_version_files h WHERE h.version_id = :installed",
        {"installed": installed_version_id},
    )


def had_files_listed(paths: list[str], hashes: list[str]) -> HadFiles:
    return HadFiles(
        "SELECT 1 FROM unnest(CAST(:had_paths AS text[]), CAST(:had_hashes AS text[])) AS h(path, sha256) "
        "WHERE true",
        {"had_paths": paths, "had_hashes": hashes},
    )


def had_chunks_of_files(product_id: uuid.UUID, hashes: list[str], sizes: list[int]) -> HadChunks:
    """Chunks of any committed file of the product whose content (SHA-256 and size) the client has."""
    return HadChunks(
        "SELECT 1 FROM download_file_chunks h JOIN download_version_files hf ON hf.file_id = h.file_id "
        "JOIN download_product_versions hv ON hv.version_id = hf.version_id "
        "JOIN unnest(CAST(:had_hashes AS text[]), CAST(:had_sizes AS bigint[])) AS l(sha256, size_bytes) "
        "ON l.sha256 = hf.sha256 AND l.size_bytes = hf.size_bytes "
        "WHERE hv.product_id = :had_product AND hv.state = 'committed'",
        {"had_product": product_id, "had_hashes": hashes, "had_sizes": sizes},
    )


# -- manifests and repairs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileRow:
    file_id: uuid.UUID
    path: str
    size_bytes: int
    sha256: str
    installed: bool = False  # the installed version has this content at this path
    chunk_count: int = 0


async def version_files(
    session: AsyncSession,
    version_id: uuid.UUID,
    *,
    after_path: str | None = None,
    limit: int | None = None,
    installed_version_id: uuid.UUID | None = None,
) -> list[FileRow]:
    """The version's files ordered by path (a page of them after `after_path`, if given)."""
    same = VersionFile.__table__.alias("same")
    have = (
        exists().where(
            same.c.version_id == installed_version_id,
            same.c.path == VersionFile.path,
            same.c.sha256 == VersionFile.sha256,
        )
        if installed_version_id is not None
        else false()
    )
    chunk_count = select(func.count()).where(FileChunk.file_id == VersionFile.file_id).scalar_subquery()
    query = select(
        VersionFile.file_id, VersionFile.path, VersionFile.size_bytes, VersionFile.sha256, have, chunk_count
    ).where(VersionFile.version_id == version_id)
    if after_path is not None:
        query = query.where(VersionFile.path > after_path)
    query = query.order_by(VersionFile.path)
    if limit is not None:
        query = query.limit(limit)
    return [FileRow(*row) for row in await session.execute(query)]


async def file_chunks(
    session: AsyncSession,
    version_id: uuid.UUID,
    file_ids: Sequence[uuid.UUID],
    *,
    installed_version_id: uuid.UUID | None = None,
) -> dict[uuid.UUID, list[tuple[ChunkRow, bool]]]:
    """Each file's chunks in offset order with the object serving them, and whether the installed version
    already holds that chunk."""
    if not file_ids:
        return {}
    held = VersionChunk.__table__.alias("held")
    have = (
        exists().where(held.c.version_id == installed_version_id, held.c.chunk_id == FileChunk.chunk_id)
        if installed_version_id is not None
        else false()
    )
    rows = await session.execute(
        select(
            FileChunk.file_id,
            FileChunk.position,
            FileChunk.chunk_id,
            FileChunk.offset,
            FileChunk.size_bytes,
            VersionChunk.compressed_size_bytes,
            VersionChunk.compressed_sha256,
            have,
        )
        .join(
            VersionChunk,
            and_(VersionChunk.version_id == version_id, VersionChunk.chunk_id == FileChunk.chunk_id),
        )
        .where(FileChunk.file_id.in_(list(file_ids)))
        .order_by(FileChunk.file_id, FileChunk.position)
    )
    chunks: dict[uuid.UUID, list[tuple[ChunkRow, bool]]] = {file_id: [] for file_id in file_ids}
    for row in rows:
        chunks[row[0]].append((ChunkRow(*row[:7]), bool(row[7])))
    return chunks
