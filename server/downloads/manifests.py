"""GetDownloadManifest: a page of a version's files (by path) with their chunks, each chunk with its sizes,
a signed expiring link and whether the client must download it; each file with whether it must be
written, both relative to what the client had when the download started (the installed version it named,
or else its files on disk), exactly as the session's totals counted it.

A page holds at most `page_size` files and stops early once it holds MAX_CHUNKS_PER_PAGE chunks (it always
holds at least one file), which keeps responses well inside gRPC's message limits.

A page is thousands of chunks, so they stay the driver's rows from the SQL to the servicer (no object per
chunk, docs/ARCHITECTURE.md "Database access"); ids are selected as text.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from server.core.deps import Deps
from server.core.errors import FailedPrecondition
from server.core.pagination import decode_page_token, encode_page_token, invalid_page_token, query_fingerprint
from server.downloads import content_repository as repo
from server.downloads.catalog import what_client_has
from server.downloads.links import file_links
from server.downloads.session_rules import CANCELLED
from server.downloads.sessions import download_not_found

MAX_CHUNKS_PER_PAGE = 4000

# A chunk row of a manifest file: repo.manifest_chunks' columns.
CHUNK_ID, COMPRESSED_SHA256, OFFSET, SIZE_BYTES, COMPRESSED_SIZE_BYTES, DOWNLOAD_REQUIRED = range(6)


@dataclass(slots=True)
class ManifestFile:
    path: str
    size_bytes: int
    sha256: str
    write_required: bool
    chunks: list[tuple]  # in offset order, columns as CHUNK_ID ... DOWNLOAD_REQUIRED
    urls: list[str]  # each chunk's signed link
    url_expires_at: datetime | None  # when those links expire (None: no chunks)


@dataclass(slots=True)
class ManifestPage:
    download_id: str
    product_id: str
    version_id: str
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
    async with deps.uow.read() as db:
        download = await repo.manifest_header(db, user_id, download_id)
        if download is None:
            raise download_not_found()
        if download.status == CANCELLED:
            raise FailedPrecondition("the download was cancelled; start a new one for a manifest")
        holdings = what_client_has(download_id, download.installed_version_id)
        rows = await repo.manifest_files(
            db, download.version_id, holdings, after_path=cursor[0] if cursor else "", limit=page_size + 1
        )
        page = _within_budget(rows, page_size)
        chunks = await repo.manifest_chunks(db, [r.file_id for r in page], holdings)
    by_file, at = {}, 0
    for row in page:
        by_file[row.file_id] = chunks[at : at + row.chunk_count]
        at += row.chunk_count
    links = await file_links(
        deps.redis, deps.store, by_file, lifetime_seconds=deps.settings.download_chunk_url_expiry_seconds
    )
    files = []
    for row in page:
        signed = links[row.file_id]
        files.append(
            ManifestFile(
                row.path,
                row.size_bytes,
                row.sha256,
                not row.installed,
                by_file[row.file_id],
                signed.urls,
                signed.expires_at,
            )
        )
    more = len(page) < len(rows)
    token = encode_page_token([page[-1].path], fingerprint) if more and page else ""
    return ManifestPage(
        download.download_id, download.product_id, download.version_id, files, token, download.file_count
    )
