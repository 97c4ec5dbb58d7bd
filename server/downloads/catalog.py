"""What the rest of DownloadService asks of the published content, inside its own unit of work: which
version a request means, and what a client must transfer and write to install it.

    version = await catalog.resolve_version(uow.session, product_id, branch="beta", version_id=None)
    plan = await catalog.transfer_plan(uow.session, version.version_id, installed_version_id=old_id)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from content_store.chunking import SHA256_HEX, path_problem
from download.v1 import download_service_pb2 as pb
from server.core.errors import NotFound
from server.core.validation import Validator
from server.downloads import content_repository as repo
from server.downloads.content_tables import ProductVersion, TransferTotals

DEFAULT_BRANCH = "public"
MAX_INSTALLED_FILES = 100_000


@dataclass(frozen=True, slots=True)
class VersionSummary:
    version_id: uuid.UUID
    product_id: uuid.UUID
    version_name: str
    branch: str
    release_notes: str
    total_size_bytes: int
    file_count: int
    chunk_count: int
    new_chunk_count: int
    published_at: datetime

    @classmethod
    def of(cls, row: ProductVersion) -> VersionSummary:
        assert row.published_at is not None, "only committed versions are summarised"
        return cls(
            version_id=row.version_id,
            product_id=row.product_id,
            version_name=row.version_name,
            branch=row.branch,
            release_notes=row.release_notes,
            total_size_bytes=row.total_size_bytes,
            file_count=row.file_count,
            chunk_count=row.chunk_count,
            new_chunk_count=row.new_chunk_count,
            published_at=row.published_at,
        )


@dataclass(frozen=True, slots=True)
class InstalledChunk:
    offset: int
    size_bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class InstalledFile:
    """A file the client has on disk (path, size, SHA-256), optionally with hashes of byte ranges."""

    path: str
    size_bytes: int
    sha256: str
    chunks: tuple[InstalledChunk, ...] = ()


@dataclass(frozen=True, slots=True)
class TransferPlan:
    """What installing a version costs a client, given what it has."""

    bytes_to_download: int  # compressed size of the distinct chunks the client lacks
    chunks_to_download: int
    bytes_to_write: int  # sizes of the files that are new or whose content changes
    files_to_write: int
    file_count: int
    chunk_count: int


def version_not_found() -> NotFound:
    return NotFound("no such published version of the product", reason="PRODUCT_VERSION_NOT_FOUND")


async def resolve_version(
    session: AsyncSession,
    product_id: uuid.UUID,
    *,
    branch: str | None,
    version_id: uuid.UUID | None,
) -> VersionSummary:
    """The committed version `version_id` of the product, or without one the latest of `branch`
    (default `public`). NOT_FOUND PRODUCT_VERSION_NOT_FOUND when there is none (uploads in progress and
    other products' versions included)."""
    if version_id is not None:
        row = await repo.committed_version(session, product_id, version_id)
    else:
        row = await repo.latest_committed(session, product_id, branch or DEFAULT_BRANCH)
    if row is None:
        raise version_not_found()
    return VersionSummary.of(row)


async def transfer_plan(
    session: AsyncSession,
    version_id: uuid.UUID,
    *,
    installed_version_id: uuid.UUID | None = None,
    installed_files: Sequence[InstalledFile] | None = None,
    download_id: uuid.UUID | None = None,
) -> TransferPlan:
    """Bytes and counts to download and write to install `version_id` (a committed version) over what
    the client has: an installed version of the same product, or else files on disk (whose chunks the
    server knows when they match a file of any committed version of the product). An installed version
    of another product, or an unknown one, counts as nothing installed.

    The totals of a version pair are computed once and then read by key. Files on disk are recorded for
    the download `download_id` (given when a session is being started: its manifest pages then read what
    the client has from there, so they agree with these totals)."""
    target = await repo.version(session, version_id)
    if target is None:
        raise version_not_found()
    if installed_version_id is not None:
        installed = await repo.committed_version(session, target.product_id, installed_version_id)
        if installed is not None:
            return await _over_version(session, target, installed.version_id)
    if not installed_files:
        return await _plan(session, target, repo.NOTHING_HAD_CHUNKS, repo.NOTHING_HAD_FILES)
    assert download_id is not None, "files on disk are recorded for the download being started"
    recorded_for = download_id
    await repo.keep_files_on_disk(
        session,
        recorded_for,
        version_id,
        [f.path for f in installed_files],
        [f.sha256 for f in installed_files],
    )
    await repo.hold_chunks_on_disk(
        session,
        recorded_for,
        version_id,
        target.product_id,
        [f.sha256 for f in installed_files],
        [f.size_bytes for f in installed_files],
    )
    return await _plan(
        session, target, repo.had_chunks_of_session(recorded_for), repo.had_files_of_session(recorded_for)
    )


def what_client_has(download_id: uuid.UUID, installed_version_id: uuid.UUID | None) -> repo.Holdings:
    """What the client of a started download has, as its transfer plan counted it: the installed version
    it named, or else the files on disk recorded for it (none recorded: nothing)."""
    if installed_version_id is not None:
        return repo.Holdings(by_version=True, of_id=installed_version_id)
    return repo.Holdings(by_version=False, of_id=download_id)


async def _over_version(
    session: AsyncSession, target: ProductVersion, installed_version_id: uuid.UUID
) -> TransferPlan:
    stored = await repo.stored_totals(session, target.version_id, installed_version_id)
    if stored is None:
        plan = await _plan(
            session,
            target,
            repo.had_chunks_of_version(installed_version_id),
            repo.had_files_of_version(installed_version_id),
        )
        await repo.store_totals(
            session,
            TransferTotals(
                version_id=target.version_id,
                installed_version_id=installed_version_id,
                bytes_to_download=plan.bytes_to_download,
                chunks_to_download=plan.chunks_to_download,
                bytes_to_write=plan.bytes_to_write,
                files_to_write=plan.files_to_write,
            ),
        )
        return plan
    return TransferPlan(
        bytes_to_download=stored.bytes_to_download,
        chunks_to_download=stored.chunks_to_download,
        bytes_to_write=stored.bytes_to_write,
        files_to_write=stored.files_to_write,
        file_count=target.file_count,
        chunk_count=target.chunk_count,
    )


async def _plan(
    session: AsyncSession, target: ProductVersion, had_chunks: repo.HadChunks, had_files: repo.HadFiles
) -> TransferPlan:
    download_bytes, download_count = await repo.chunks_to_fetch_totals(session, target.version_id, had_chunks)
    write_bytes, write_count = await repo.files_to_write_totals(session, target.version_id, had_files)
    return TransferPlan(
        bytes_to_download=download_bytes,
        chunks_to_download=download_count,
        bytes_to_write=write_bytes,
        files_to_write=write_count,
        file_count=target.file_count,
        chunk_count=target.chunk_count,
    )


def installed_files(
    v: Validator, items: Iterable[pb.InstalledFile], field: str = "installed_files"
) -> list[InstalledFile]:
    """Parses the client's installed files (paths as in a manifest, sizes, SHA-256 hex, optional range
    hashes), recording every problem on `v`."""
    parsed: list[InstalledFile] = []
    seen: set[str] = set()
    items = list(items)
    if len(items) > MAX_INSTALLED_FILES:
        v.fail(field, f"at most {MAX_INSTALLED_FILES} files")
        return parsed
    for i, item in enumerate(items):
        where = f"{field}[{i}]"
        if (problem := path_problem(item.path)) is not None:
            v.fail(f"{where}.path", problem)
        elif item.path in seen:
            v.fail(f"{where}.path", "is a duplicate")
        seen.add(item.path)
        v.non_negative(f"{where}.size_bytes", item.size_bytes)
        if not SHA256_HEX.match(item.sha256):
            v.fail(f"{where}.sha256", "must be 64 lowercase hex characters")
        ranges = []
        for j, chunk in enumerate(item.chunks):
            at = f"{where}.chunks[{j}]"
            v.non_negative(f"{at}.offset", chunk.offset)
            if chunk.size_bytes <= 0:
                v.fail(f"{at}.size_bytes", "must be positive")
            if not SHA256_HEX.match(chunk.sha256):
                v.fail(f"{at}.sha256", "must be 64 lowercase hex characters")
            ranges.append(InstalledChunk(chunk.offset, chunk.size_bytes, chunk.sha256))
        parsed.append(InstalledFile(item.path, item.size_bytes, item.sha256, tuple(ranges)))
    return parsed
