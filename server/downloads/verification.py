"""VerifyInstallation: the client's file sizes and hashes against a version's manifest → the missing and
corrupted files and exactly the chunks to re-fetch; the result is stored (seed VerificationResult) and
announced (`download.file.verification.completed`).

For a file that differs, the client may send SHA-256 hashes of byte ranges (at the manifest's offsets,
or where the store's FastCDC parameters cut its copy): a manifest chunk matched by a range with the same
offset, size and hash is intact and not re-fetched; without ranges, every chunk of the file is.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from content_store.chunking import object_key
from server.core import replay
from server.core.deps import Deps
from server.core.events.cloudevents import DOWNLOAD_EVENTS_TOPIC, rfc3339
from server.core.replay import request_key
from server.downloads import catalog
from server.downloads import content_repository as repo
from server.downloads.content_tables import VerificationResult
from server.downloads.links import ChunkLink
from server.library.entitlements import require_owned

VERIFICATION_COMPLETED = "com.platform.download.file.verification.completed.v1"
MISSING, SIZE_MISMATCH, HASH_MISMATCH = "missing", "size_mismatch", "hash_mismatch"
COMPLETED_OK, COMPLETED_ERRORS = "completed_ok", "completed_errors"


@dataclass(frozen=True, slots=True)
class RepairChunk:
    chunk_id: str
    compressed_sha256: str
    offset: int
    size_bytes: int
    compressed_size_bytes: int


@dataclass(frozen=True, slots=True)
class DamagedFile:
    path: str
    problem: str
    expected_size_bytes: int
    expected_sha256: str
    chunks: list[RepairChunk]


@dataclass(frozen=True, slots=True)
class Verification:
    verification_id: uuid.UUID
    product_id: uuid.UUID
    version_id: uuid.UUID
    status: str
    checked_files_count: int
    corrupted_files_count: int
    missing_files_count: int
    damaged_files: list[DamagedFile]
    repair_size_bytes: int
    started_at: datetime
    completed_at: datetime


@dataclass(frozen=True, slots=True)
class VerificationView:
    verification: Verification
    links: dict[tuple[str, str], ChunkLink]


def problem_of(expected: repo.FileRow, reported: catalog.InstalledFile | None) -> str | None:
    if reported is None:
        return MISSING
    if reported.size_bytes != expected.size_bytes:
        return SIZE_MISMATCH
    if reported.sha256 != expected.sha256:
        return HASH_MISMATCH
    return None


def chunks_to_refetch(
    chunks: Sequence[repo.ChunkRow], reported: catalog.InstalledFile | None
) -> list[repo.ChunkRow]:
    """The manifest chunks of a damaged file that the client's range hashes don't vouch for."""
    intact = {(c.offset, c.size_bytes, c.sha256) for c in reported.chunks} if reported else set()
    return [c for c in chunks if (c.offset, c.size_bytes, c.chunk_id) not in intact]


async def verify_installation(
    deps: Deps,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    version_id: uuid.UUID,
    files: Sequence[catalog.InstalledFile],
    request_id: uuid.UUID | None,
) -> VerificationView:
    key = request_key(user_id, "VerifyInstallation", request_id)
    async with deps.uow() as uow:
        if (first := await replay.claim(uow, key, Verification)) is None:
            await require_owned(uow.session, user_id, product_id)
            await catalog.resolve_version(uow.session, product_id, branch=None, version_id=version_id)
            first = await _verify(uow, deps.clock(), user_id, product_id, version_id, files)
            await replay.remember(uow, key, first)
            await uow.commit()
    # Repairs are rare and small: their links are signed afresh (manifests cache theirs, links.py).
    objects = list(
        dict.fromkeys((c.chunk_id, c.compressed_sha256) for f in first.damaged_files for c in f.chunks)
    )
    signed = deps.store.presign_gets(
        [object_key(*obj) for obj in objects], expires_in=deps.settings.download_chunk_url_expiry_seconds
    )
    links = {obj: ChunkLink(s.url, s.expires_at) for obj, s in zip(objects, signed, strict=True)}
    return VerificationView(first, links)


async def _verify(uow, now, user_id, product_id, version_id, files) -> Verification:
    reported = {f.path: f for f in files}
    expected = await repo.version_files(uow.session, version_id)
    damaged_rows = [
        (row, problem) for row in expected if (problem := problem_of(row, reported.get(row.path)))
    ]
    chunks = await repo.file_chunks(uow.session, [row.file_id for row, _ in damaged_rows])
    damaged, refetch = [], {}
    for row, problem in damaged_rows:
        needed = chunks_to_refetch(chunks[row.file_id], reported.get(row.path))
        refetch.update({c.chunk_id: c.compressed_size_bytes for c in needed})
        damaged.append(
            DamagedFile(
                row.path,
                problem,
                row.size_bytes,
                row.sha256,
                [
                    RepairChunk(
                        c.chunk_id, c.compressed_sha256, c.offset, c.size_bytes, c.compressed_size_bytes
                    )
                    for c in needed
                ],
            )
        )
    missing = sum(1 for d in damaged if d.problem == MISSING)
    result = Verification(
        verification_id=uuid.uuid4(),
        product_id=product_id,
        version_id=version_id,
        status=COMPLETED_ERRORS if damaged else COMPLETED_OK,
        checked_files_count=len(expected),
        corrupted_files_count=len(damaged) - missing,
        missing_files_count=missing,
        damaged_files=damaged,
        repair_size_bytes=sum(refetch.values()),
        started_at=now,
        completed_at=now,
    )
    redownload = [
        {"path": d.path, "problem": d.problem, "chunkIds": [c.chunk_id for c in d.chunks]} for d in damaged
    ]
    uow.session.add(
        VerificationResult(
            verification_id=result.verification_id,
            user_id=user_id,
            product_id=product_id,
            version_id=version_id,
            status=result.status,
            checked_files_count=result.checked_files_count,
            corrupted_files_count=result.corrupted_files_count,
            missing_files_count=result.missing_files_count,
            repair_size_bytes=result.repair_size_bytes,
            files_requiring_redownload=redownload,
            started_at=now,
            completed_at=now,
        )
    )
    uow.add_event(
        VERIFICATION_COMPLETED,
        user_id,
        {
            "verificationId": str(result.verification_id),
            "userId": str(user_id),
            "productId": str(product_id),
            "versionId": str(version_id),
            "status": result.status,
            "checkedFilesCount": result.checked_files_count,
            "corruptedFilesCount": result.corrupted_files_count,
            "missingFilesCount": result.missing_files_count,
            "repairedFilesCount": 0,
            "repairSizeBytes": result.repair_size_bytes,
            "filesRequiringRedownload": [d.path for d in damaged],
            "startedAt": rfc3339(now),
            "completedAt": rfc3339(now),
        },
        topic=DOWNLOAD_EVENTS_TOPIC,
    )
    return result
