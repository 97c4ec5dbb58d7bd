"""GetDownloadManifest: a page of a version's files (by path) with their chunks, each chunk with its sizes,
a signed expiring link and whether the client must download it; each file with whether it must be
written, both relative to what the client had when the download started (the installed version it named,
or else its files on disk), exactly as the session's totals counted it.

A page holds at most `page_size` files and stops early once it holds MAX_CHUNKS_PER_PAGE chunks (it always
holds at least one file), which keeps responses well inside gRPC's message limits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from server.core.deps import Deps
from server.core.errors import FailedPrecondition
from server.core.pagination import decode_page_token, encode_page_token, invalid_page_token, query_fingerprint
from server.downloads import content_repository as repo
from server.downloads.catalog import version_not_found, what_client_has
from server.downloads.links import file_links
from server.downloads.session_repository import SessionRepository
from server.downloads.session_rules import CANCELLED
from server.downloads.sessions import download_not_found

MAX_CHUNKS_PER_PAGE = 4000


@dataclass(frozen=True, slots=True)
class ManifestChunk:
    chunk_id: str
    offset: int
    size_bytes: int
    compressed_size_bytes: int
    url: str
    url_expires_at: datetime
    download_required: bool


@dataclass(frozen=True, slots=True)
class ManifestFile:
    path: str
    size_bytes: int
    sha256: str
    write_required: bool
    chunks: list[ManifestChunk]


@dataclass(frozen=True, slots=True)
class ManifestPage:
    download_id: uuid.UUID
    product_id: uuid.UUID
    version_id: uuid.UUID
    files: list[ManifestFile]
    next_page_token: str
    total_size: int


def _within_budget(rows: list[repo.FileRow], page_size: int) -> list[repo.FileRow]:
    taken, chunks = [], 0
    for row in rows[:page_size]:
        if taken and chunks + row.chunk_count > MAX_CHUNKS_PER_PAGE:
            break
        taken.append(row)
        chunks += row.chunk_count
    return taken


async def manifest_page(
    deps: Deps, user_id: uuid.UUID, download_id: uuid.UUID, *, page_size: int, page_token: str
) -> ManifestPage:
    """A page of the manifest of the user's download `download_id` (another user's is DOWNLOAD_NOT_FOUND;
    a cancelled one is FAILED_PRECONDITION INVALID_STATE_TRANSITION)."""
    fingerprint = query_fingerprint("GetDownloadManifest", download_id)
    cursor = decode_page_token(page_token, fingerprint)
    if cursor is not None and (len(cursor) != 1 or not isinstance(cursor[0], str)):
        raise invalid_page_token()
    async with deps.uow() as uow:
        download = await SessionRepository(uow.session).get(user_id, download_id)
        if download is None:
            raise download_not_found()
        if download.status == CANCELLED:
            raise FailedPrecondition("the download was cancelled; start a new one for a manifest")
        version_id = download.version_id
        version = await repo.version(uow.session, version_id)
        if version is None:
            raise version_not_found()
        had_chunks, had_files = what_client_has(download.id, download.installed_version_id)
        rows = await repo.version_files(
            uow.session,
            version_id,
            after_path=cursor[0] if cursor else None,
            limit=page_size + 1,
            had=had_files,
        )
        page = _within_budget(rows, page_size)
        chunks = await repo.file_chunks(uow.session, [r.file_id for r in page], had=had_chunks)
    links = await file_links(
        deps.redis,
        deps.store,
        {file_id: [chunk for chunk, _ in listed] for file_id, listed in chunks.items()},
        lifetime_seconds=deps.settings.download_chunk_url_expiry_seconds,
    )
    files = [
        ManifestFile(
            row.path,
            row.size_bytes,
            row.sha256,
            not row.installed,
            [
                ManifestChunk(
                    chunk.chunk_id,
                    chunk.offset,
                    chunk.size_bytes,
                    chunk.compressed_size_bytes,
                    link.url,
                    link.expires_at,
                    download_required=not held,
                )
                for (chunk, held), link in zip(chunks[row.file_id], links[row.file_id], strict=True)
            ],
        )
        for row in page
    ]
    more = len(page) < len(rows)
    token = encode_page_token([page[-1].path], fingerprint) if more and page else ""
    return ManifestPage(download_id, version.product_id, version_id, files, token, version.file_count)
