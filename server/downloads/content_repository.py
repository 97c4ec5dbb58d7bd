"""SQL of the chunk store and published content (the only module that queries content_tables)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, exists, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from content_store.chunking import FileEntry
from server.core.db import Db
from server.downloads.content_tables import (
    STATE_COMMITTED,
    FileChunk,
    ProductVersion,
    StoredChunk,
    TransferTotals,
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
            served = distinct.setdefault(
                ref.chunk_id,
                {
                    "version_id": version_id,
                    "chunk_id": ref.chunk_id,
                    "size_bytes": ref.size,
                    "compressed_size_bytes": ref.compressed_size,
                    "compressed_sha256": ref.compressed_sha256,
                },
            )
            chunk_rows.append(
                {"file_id": file_id, "position": position, "chunk_id": ref.chunk_id}
                | {"offset": ref.offset, "size_bytes": ref.size}
                | {key: served[key] for key in ("compressed_size_bytes", "compressed_sha256")}
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
    transfer plans then read from this table alone, and copies it onto the file chunks (which manifests
    and repairs read alone)."""
    best = (
        select(StoredChunk.chunk_id, StoredChunk.compressed_sha256, StoredChunk.compressed_size_bytes)
        .where(StoredChunk.verified.is_(True))
        .ext(distinct_on(StoredChunk.chunk_id))
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
    await session.execute(
        update(FileChunk)
        .where(
            FileChunk.file_id == VersionFile.file_id,
            VersionFile.version_id == version_id,
            VersionChunk.version_id == version_id,
            VersionChunk.chunk_id == FileChunk.chunk_id,
        )
        .values(
            compressed_sha256=VersionChunk.compressed_sha256,
            compressed_size_bytes=VersionChunk.compressed_size_bytes,
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
        .ext(distinct_on(ProductVersion.branch))
        .order_by(ProductVersion.branch, ProductVersion.published_at.desc(), ProductVersion.version_id.desc())
    )
    return set(rows)


# -- transfer plans --------------------------------------------------------------------------------------
#
# What a client lacks is a set difference between the target version's rows and what the client has. It is
# computed as one aggregate over both sets together (UNION ALL, GROUP BY the key), never as a join: a
# join's plan depends on row estimates, and an estimate of one row per version (a version just inserted,
# or a generic plan over many small versions) made the planner pick a nested loop of 10,000 x 10,000
# comparisons for a 10,000-chunk version (67 s measured). A grouping is a hash or sort of the rows, linear
# whatever the estimates.


@dataclass(frozen=True, slots=True)
class HadChunks:
    """A `SELECT chunk_id …` of the chunk ids a client already has."""

    sql: str
    params: dict


@dataclass(frozen=True, slots=True)
class HadFiles:
    """A `SELECT path, sha256 …` of the file contents a client already has at their paths."""

    sql: str
    params: dict


NOTHING_HAD_CHUNKS = HadChunks("SELECT NULL::text AS chunk_id WHERE false", {})
NOTHING_HAD_FILES = HadFiles("SELECT NULL::text AS path, NULL::text AS sha256 WHERE false", {})


def had_chunks_of_version(installed_version_id: uuid.UUID) -> HadChunks:
    return HadChunks(
        "SELECT chunk_id FROM download_version_chunks WHERE version_id = :had_version",
        {"had_version": installed_version_id},
    )


def had_files_of_version(installed_version_id: uuid.UUID) -> HadFiles:
    return HadFiles(
        "SELECT path, sha256 FROM download_version_files WHERE version_id = :had_version",
        {"had_version": installed_version_id},
    )


def had_chunks_of_session(download_id: uuid.UUID) -> HadChunks:
    return HadChunks(
        "SELECT chunk_id FROM download_session_held_chunks WHERE download_id = :had_download",
        {"had_download": download_id},
    )


def had_files_of_session(download_id: uuid.UUID) -> HadFiles:
    return HadFiles(
        "SELECT path, sha256 FROM download_session_kept_files WHERE download_id = :had_download",
        {"had_download": download_id},
    )


async def chunks_to_fetch_totals(
    session: AsyncSession, version_id: uuid.UUID, had: HadChunks
) -> tuple[int, int]:
    """(compressed bytes, count) of the version's distinct chunks the client lacks."""
    row = (
        await session.execute(
            text(
                "SELECT coalesce(sum(g.size), 0), count(*) FROM (SELECT max(u.size) AS size FROM ("
                "SELECT chunk_id, compressed_size_bytes AS size FROM download_version_chunks "
                f"WHERE version_id = :target UNION ALL SELECT h.chunk_id, NULL FROM ({had.sql}) h"
                ") u GROUP BY u.chunk_id HAVING bool_and(u.size IS NOT NULL)) g"
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
                "SELECT coalesce(sum(g.size), 0), count(*) FROM (SELECT max(u.size) AS size FROM ("
                "SELECT path, sha256, size_bytes AS size FROM download_version_files "
                f"WHERE version_id = :target UNION ALL SELECT h.path, h.sha256, NULL FROM ({had.sql}) h"
                ") u GROUP BY u.path, u.sha256 HAVING bool_and(u.size IS NOT NULL)) g"
            ),
            {"target": version_id, **had.params},
        )
    ).one()
    return int(row[0]), int(row[1])


async def stored_totals(
    session: AsyncSession, version_id: uuid.UUID, installed_version_id: uuid.UUID
) -> TransferTotals | None:
    return await session.get(TransferTotals, (version_id, installed_version_id))


async def store_totals(session: AsyncSession, totals: TransferTotals) -> None:
    """Keeps the first totals of a pair (a concurrent first computation found the same numbers)."""
    await session.execute(
        pg_insert(TransferTotals)
        .values(
            version_id=totals.version_id,
            installed_version_id=totals.installed_version_id,
            bytes_to_download=totals.bytes_to_download,
            chunks_to_download=totals.chunks_to_download,
            bytes_to_write=totals.bytes_to_write,
            files_to_write=totals.files_to_write,
        )
        .on_conflict_do_nothing()
    )


async def keep_files_on_disk(
    session: AsyncSession, download_id: uuid.UUID, version_id: uuid.UUID, paths: list[str], hashes: list[str]
) -> None:
    """Records the version's files the client has on disk at their path with their content."""
    await session.execute(
        text(
            "INSERT INTO download_session_kept_files (download_id, path, sha256) "
            "SELECT :download, u.path, u.sha256 FROM ("
            "SELECT path, sha256, true AS wanted FROM download_version_files WHERE version_id = :target "
            "UNION ALL SELECT l.path, l.sha256, false FROM "
            "unnest(CAST(:paths AS text[]), CAST(:hashes AS text[])) AS l(path, sha256)"
            ") u GROUP BY u.path, u.sha256 HAVING bool_or(u.wanted) AND bool_or(NOT u.wanted)"
        ),
        {"download": download_id, "target": version_id, "paths": paths, "hashes": hashes},
    )


async def hold_chunks_on_disk(
    session: AsyncSession,
    download_id: uuid.UUID,
    version_id: uuid.UUID,
    product_id: uuid.UUID,
    hashes: list[str],
    sizes: list[int],
) -> None:
    """Records the version's distinct chunks the client has on disk: those of any committed file of the
    product whose content (SHA-256 and size) is one of the client's files. Equal content is cut into the
    same chunks, so one such file per content is read (by the content index)."""
    await session.execute(
        text(
            "INSERT INTO download_session_held_chunks (download_id, chunk_id) "
            "SELECT :download, u.chunk_id FROM ("
            "SELECT chunk_id, true AS wanted FROM download_version_chunks WHERE version_id = :target "
            "UNION ALL SELECT fc.chunk_id, false FROM "
            "unnest(CAST(:hashes AS text[]), CAST(:sizes AS bigint[])) AS l(sha256, size_bytes) "
            "CROSS JOIN LATERAL (SELECT hf.file_id FROM download_version_files hf "
            "JOIN download_product_versions hv ON hv.version_id = hf.version_id "
            "WHERE hf.sha256 = l.sha256 AND hf.size_bytes = l.size_bytes "
            "AND hv.product_id = :product AND hv.state = 'committed' LIMIT 1) f "
            "JOIN download_file_chunks fc ON fc.file_id = f.file_id"
            ") u GROUP BY u.chunk_id HAVING bool_or(u.wanted) AND bool_or(NOT u.wanted)"
        ),
        {"download": download_id, "target": version_id, "product": product_id}
        | {"hashes": hashes, "sizes": sizes},
    )


# -- manifests and repairs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileRow:
    file_id: uuid.UUID
    path: str
    size_bytes: int
    sha256: str
    installed: bool = False  # the client has this content at this path
    chunk_count: int = 0


async def version_files(session: AsyncSession, version_id: uuid.UUID) -> list[FileRow]:
    """The version's files ordered by path."""
    rows = await session.execute(
        text(
            "SELECT file_id, path, size_bytes, sha256 FROM download_version_files "
            "WHERE version_id = :version ORDER BY path"
        ),
        {"version": version_id},
    )
    return [FileRow(*row) for row in rows]


async def file_chunks(
    session: AsyncSession, file_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[ChunkRow]]:
    """Each file's chunks in offset order with the object serving them (one range scan of the primary
    key per file)."""
    if not file_ids:
        return {}
    rows = await session.execute(
        text(
            'SELECT file_id, position, chunk_id, "offset", size_bytes, compressed_size_bytes, '
            "compressed_sha256 FROM download_file_chunks WHERE file_id = ANY(CAST(:files AS uuid[])) "
            "ORDER BY file_id, position"
        ),
        {"files": list(file_ids)},
    )
    chunks: dict[uuid.UUID, list[ChunkRow]] = {file_id: [] for file_id in file_ids}
    for row in rows:
        chunks[row[0]].append(ChunkRow(*row))
    return chunks


@dataclass(frozen=True, slots=True)
class Holdings:
    """What the client of a download has, as its transfer plan counted it: the content of its installed
    version (`by_version`, `of_id` = that version) or what was recorded for the session (`of_id` = the
    download: its held chunks and kept files)."""

    by_version: bool
    of_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ManifestHeader:
    """What a manifest page needs of its download: ids as text (they go to the response as they are)."""

    status: str
    download_id: str
    product_id: str
    version_id: str
    installed_version_id: uuid.UUID | None
    file_count: int


_MANIFEST_HEADER = (
    "SELECT s.status, s.id::text, v.product_id::text, v.version_id::text, s.installed_version_id, "
    "v.file_count FROM download_sessions s JOIN download_product_versions v ON v.version_id = s.version_id "
    "WHERE s.id = %s AND s.user_id = %s"
)

# A page of files (after a path; '' sorts before every path), each with whether the client has its
# content at its path and how many chunks it has; then the chunks of those files, in the page's order.
# What the client has is probed once per row of the page (a lateral subquery, which the planner cannot turn
# into a hash of everything the client has: that hash was built for every page, all 10,000 chunks of an
# installed version page after page).
_FILES_PAGE = (
    "SELECT f.file_id, f.path, f.size_bytes, f.sha256, kept.one IS NOT NULL, "
    "(SELECT count(*) FROM download_file_chunks c WHERE c.file_id = f.file_id) "
    "FROM download_version_files f LEFT JOIN LATERAL ({had} LIMIT 1) kept ON true "
    "WHERE f.version_id = %(version)s::uuid AND f.path > %(after)s ORDER BY f.path LIMIT %(limit)s"
)
_KEPT_FILE = {
    True: "SELECT 1 AS one FROM download_version_files h WHERE h.version_id = %(had)s AND h.path = f.path "
    "AND h.sha256 = f.sha256",
    False: "SELECT 1 AS one FROM download_session_kept_files h WHERE h.download_id = %(had)s "
    "AND h.path = f.path AND h.sha256 = f.sha256",
}
_PAGE_CHUNKS = (
    'SELECT fc.chunk_id, fc.compressed_sha256, fc."offset", fc.size_bytes, fc.compressed_size_bytes, '
    "held.one IS NULL FROM unnest(%(files)s::uuid[]) WITH ORDINALITY AS p(file_id, n) "
    "JOIN download_file_chunks fc ON fc.file_id = p.file_id "
    "LEFT JOIN LATERAL ({had} LIMIT 1) held ON true ORDER BY p.n, fc.position"
)
_HELD_CHUNK = {
    True: "SELECT 1 AS one FROM download_version_chunks h WHERE h.version_id = %(had)s "
    "AND h.chunk_id = fc.chunk_id",
    False: "SELECT 1 AS one FROM download_session_held_chunks h WHERE h.download_id = %(had)s "
    "AND h.chunk_id = fc.chunk_id",
}
_FILES_PAGE_BY = {by: _FILES_PAGE.format(had=had) for by, had in _KEPT_FILE.items()}
_PAGE_CHUNKS_BY = {by: _PAGE_CHUNKS.format(had=had) for by, had in _HELD_CHUNK.items()}


async def manifest_header(db: Db, user_id: uuid.UUID, download_id: uuid.UUID) -> ManifestHeader | None:
    row = await db.one(_MANIFEST_HEADER, (download_id, user_id))
    return None if row is None else ManifestHeader(*row)


async def manifest_files(
    db: Db, version_id: str, holdings: Holdings, *, after_path: str, limit: int
) -> list[FileRow]:
    """Up to `limit` of the version's files after `after_path` ('' = from the first), ordered by path."""
    params = {"version": version_id, "after": after_path, "limit": limit, "had": holdings.of_id}
    return [FileRow(*row) for row in await db.all(_FILES_PAGE_BY[holdings.by_version], params)]


async def manifest_chunks(db: Db, file_ids: Sequence[uuid.UUID], holdings: Holdings) -> list[tuple]:
    """The chunks of the files, file after file in the order given, each in offset order, as the driver
    returns them (a page holds thousands; no object per chunk): (chunk_id, compressed_sha256, offset,
    size_bytes, compressed_size_bytes, download_required), the last one true when the client lacks it."""
    params = {"files": list(file_ids), "had": holdings.of_id}
    return await db.all(_PAGE_CHUNKS_BY[holdings.by_version], params, binary=True)
