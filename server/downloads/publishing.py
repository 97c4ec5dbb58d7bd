"""Publishing use cases: begin a version upload, commit it, and publish a directory on the server's host.

Begin records the version (state `uploading`), its files and chunk lists, and answers which chunks the
store lacks, with presigned PUTs bound to each compressed object's length and SHA-256. Commit runs the
verifier over every chunk of the version that has no verified object yet; only when all are verified does
the version become `committed` and so the latest of its branch. Both are idempotent: Begin again resumes
(or redefines) an uncommitted version, Commit again returns the committed version.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from content_store import builds
from content_store.chunking import FileEntry, file_list_problems, object_key
from server.core import replay
from server.core.deps import Deps
from server.core.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument
from server.core.replay import RequestKey
from server.downloads import content_repository as repo
from server.downloads import verifier
from server.downloads.catalog import VersionSummary, version_not_found
from server.downloads.content_tables import STATE_COMMITTED, STATE_UPLOADING, ProductVersion

# How many chunk ids an incomplete commit names in its error (the rest are counted).
MAX_NAMED_CHUNKS = 20


@dataclass(frozen=True, slots=True)
class VersionDraft:
    product_id: uuid.UUID
    version_name: str
    branch: str
    release_notes: str
    files: Sequence[FileEntry]


@dataclass(frozen=True, slots=True)
class UploadTarget:
    chunk_id: str
    url: str
    headers: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class BeginResult:
    version_id: uuid.UUID
    missing: list[UploadTarget]
    distinct_chunk_count: int
    stored_chunk_count: int


@dataclass(frozen=True, slots=True)
class PublishedVersion:
    version: VersionSummary
    download_size_bytes: int


def version_exists() -> AlreadyExists:
    return AlreadyExists(
        "a version with this name is already published for the product",
        reason="PRODUCT_VERSION_ALREADY_EXISTS",
    )


def upload_incomplete(missing: Sequence[str], forged: Sequence[str]) -> FailedPrecondition:
    named = [*forged, *missing][:MAX_NAMED_CHUNKS]
    parts = []
    if forged:
        parts.append(f"{len(forged)} chunk(s) whose content does not match their id were rejected")
    if missing:
        parts.append(f"{len(missing)} chunk(s) were not uploaded")
    return FailedPrecondition(
        "the version's upload is incomplete: " + "; ".join(parts) + "; upload them and commit again",
        reason="VERSION_UPLOAD_INCOMPLETE",
        metadata={
            "missingChunkCount": str(len(missing)),
            "rejectedChunkCount": str(len(forged)),
            "rejectedChunks": ",".join(forged[:MAX_NAMED_CHUNKS]),
            "chunks": ",".join(named),
        },
    )


def validate_files(files: Sequence[FileEntry]) -> None:
    """The file list rules of chunking.file_list_problems as INVALID_ARGUMENT, before anything is written."""
    problems = file_list_problems(files)
    if problems:
        raise InvalidArgument([FieldViolation(field, description) for field, description in problems])


async def begin_upload(deps: Deps, draft: VersionDraft) -> BeginResult:
    validate_files(draft.files)
    chunk_count = sum(len(f.chunks) for f in draft.files)
    async with deps.uow() as uow:
        row = await repo.claim_version(
            uow.session,
            ProductVersion(
                version_id=uuid.uuid4(),
                product_id=draft.product_id,
                version_name=draft.version_name,
                branch=draft.branch,
                release_notes=draft.release_notes,
                state=STATE_UPLOADING,
                total_size_bytes=0,
                file_count=0,
                chunk_count=0,
            ),
        )
        if row.state == STATE_COMMITTED:
            raise version_exists()
        row.branch = draft.branch
        row.release_notes = draft.release_notes
        row.total_size_bytes = sum(f.size for f in draft.files)
        row.file_count = len(draft.files)
        row.chunk_count = chunk_count
        await repo.replace_files(uow.session, row.version_id, draft.files)
        pending = await repo.unverified_chunks(uow.session, row.version_id)
        distinct = await repo.distinct_chunk_count(uow.session, row.version_id)
        version_id = row.version_id
        await uow.commit()
    already_uploaded = await verifier.uploaded(deps.store, pending)
    expiry = deps.settings.download_upload_url_expiry_seconds
    targets = []
    for chunk in pending:
        if chunk.chunk_id in already_uploaded:
            continue
        put = deps.store.presign_put(
            object_key(chunk.chunk_id, chunk.compressed_sha256),
            size=chunk.compressed_size_bytes,
            sha256_hex=chunk.compressed_sha256,
            expires_in=expiry,
        )
        targets.append(UploadTarget(chunk.chunk_id, put.url, put.headers, put.expires_at))
    return BeginResult(version_id, targets, distinct, distinct - len(pending))


async def commit_upload(
    deps: Deps, version_id: uuid.UUID, *, replay_key: RequestKey | None = None
) -> PublishedVersion:
    async with deps.uow() as uow:
        row = await repo.version(uow.session, version_id)
        if row is None:
            raise version_not_found()
        if row.state == STATE_COMMITTED:
            return await _published(uow.session, row)
        pending = await repo.unverified_chunks(uow.session, version_id)
    verdicts = await verifier.verify_all(deps.store, pending)  # no transaction held while reading S3
    verified = [v for v in verdicts if v.outcome is verifier.Outcome.VERIFIED]
    forged = [v.chunk for v in verdicts if v.outcome is verifier.Outcome.FORGED]
    async with deps.uow() as uow:
        if (first := await replay.claim(uow, replay_key, PublishedVersion)) is not None:
            return first
        row = await repo.version(uow.session, version_id, lock=True)
        if row is None:
            raise version_not_found()
        if row.state == STATE_COMMITTED:  # a concurrent commit won
            return await _published(uow.session, row)
        now = deps.clock()
        await repo.mark_verified(uow.session, [(v.chunk, v.compressed_size) for v in verified], now)
        await repo.forget_unverified(uow.session, forged)
        row.new_chunk_count += len(verified)
        # Checked again under the version's lock: a resumed Begin may have changed the file list.
        if still_pending := await repo.unverified_chunks(uow.session, version_id):
            await uow.commit()  # what was verified stays verified; a retry checks only the rest
            rejected = [c.chunk_id for c in forged]
            raise upload_incomplete(
                [c.chunk_id for c in still_pending if c.chunk_id not in rejected], rejected
            )
        await repo.adopt_verified_objects(uow.session, version_id)
        row.state = STATE_COMMITTED
        row.published_at = now
        result = await _published(uow.session, row)
        await replay.remember(uow, replay_key, result)
        await uow.commit()
    return result


async def _published(session, row: ProductVersion) -> PublishedVersion:
    return PublishedVersion(VersionSummary.of(row), await repo.download_size(session, row.version_id))


async def publish_directory(
    deps: Deps, draft: VersionDraft, source_path: str, *, replay_key: RequestKey | None = None
) -> PublishedVersion:
    """PublishProductVersion: the same protocol run by the server over a directory on its host; the
    chunks it lacks go straight to the store instead of through presigned links."""
    async with deps.uow() as uow:  # a replay returns the first response before anything is redone
        if (first := await replay.claim(uow, replay_key, PublishedVersion)) is not None:
            return first
    try:
        build = await asyncio.to_thread(builds.scan, source_path)
    except (builds.BuildError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidArgument([FieldViolation("source_path", f"cannot be published: {reason}")]) from exc
    begun = await begin_upload(deps, dataclasses.replace(draft, files=build.files))
    gate = asyncio.Semaphore(verifier.VERIFY_CONCURRENCY)

    async def store(chunk: str) -> None:
        async with gate:
            blob, blob_sha256 = await asyncio.to_thread(build.compressed, chunk)
            await deps.store.put(object_key(chunk, blob_sha256), blob, sha256_hex=blob_sha256)

    await asyncio.gather(*(store(target.chunk_id) for target in begun.missing))
    return await commit_upload(deps, begun.version_id, replay_key=replay_key)
