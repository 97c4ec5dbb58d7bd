"""DownloadService transport for published content: publishing (service role), versions, manifests,
update checks and verification. Maps proto ⇄ domain and calls a use case; nothing else.

Field rules are the contract's buf.validate annotations; the checks here parse what the use cases need
and the rules that span fields (a file's chunk list covering it) live in chunking.file_list_problems.
"""

from __future__ import annotations

import re

from content_store.chunking import ChunkRef, FileEntry
from download.v1 import download_service_pb2 as pb
from server.core.auth import current_user_id, require_service
from server.core.deps import Deps
from server.core.protoconv import timestamp
from server.core.replay import request_key
from server.core.validation import Validator
from server.downloads import catalog, manifests, publishing, updates, verification, versions
from server.downloads.catalog import DEFAULT_BRANCH, VersionSummary
from server.downloads.links import ChunkLink

VERSION_NAME_MAX_LEN = 64
RELEASE_NOTES_MAX_LEN = 16384
BRANCH = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _branch(v: Validator, field: str, value: str, *, default: str | None = DEFAULT_BRANCH) -> str:
    if not value:
        return default or ""
    if not BRANCH.match(value):
        v.fail(field, "must be 1-64 of [a-z0-9._-], starting with a letter or digit")
    return value


def version_pb(version: VersionSummary, *, download_size_bytes: int, is_latest: bool) -> pb.ProductVersion:
    return pb.ProductVersion(
        version_id=str(version.version_id),
        product_id=str(version.product_id),
        version_name=version.version_name,
        release_notes=version.release_notes,
        total_size_bytes=version.total_size_bytes,
        file_count=version.file_count,
        chunk_count=version.chunk_count,
        new_chunk_count=version.new_chunk_count,
        published_at=timestamp(version.published_at),
        branch=version.branch,
        is_latest=is_latest,
        download_size_bytes=download_size_bytes,
    )


def _published_pb(published: publishing.PublishedVersion) -> pb.ProductVersion:
    # A version is the latest of its branch when it commits; later versions are listed by ListProductVersions.
    return version_pb(published.version, download_size_bytes=published.download_size_bytes, is_latest=True)


def _file_entries(files) -> list[FileEntry]:
    return [
        FileEntry(
            path=f.path,
            size=f.size_bytes,
            sha256=f.sha256,
            chunks=tuple(
                ChunkRef(c.chunk_id, c.offset, c.size_bytes, c.compressed_size_bytes, c.compressed_sha256)
                for c in f.chunks
            ),
        )
        for f in files
    ]


def _draft_fields(v: Validator, request) -> tuple:
    product_id = v.uuid("product_id", request.product_id)
    name = v.text("version_name", request.version_name, max_len=VERSION_NAME_MAX_LEN, required=True)
    notes = v.text("release_notes", request.release_notes, max_len=RELEASE_NOTES_MAX_LEN)
    branch = _branch(v, "branch", request.branch)
    return product_id, name, branch, notes


_PROBLEMS = {
    verification.MISSING: pb.DamagedFile.MISSING,
    verification.SIZE_MISMATCH: pb.DamagedFile.SIZE_MISMATCH,
    verification.HASH_MISMATCH: pb.DamagedFile.HASH_MISMATCH,
}
_VERIFICATION_STATUSES = {
    verification.COMPLETED_OK: pb.VerificationResult.COMPLETED_OK,
    verification.COMPLETED_ERRORS: pb.VerificationResult.COMPLETED_ERRORS,
}


def _update_pb(update: updates.ProductUpdate) -> pb.ProductUpdate:
    latest = update.latest
    return pb.ProductUpdate(
        product_id=str(update.product_id),
        installed_version_id=str(update.installed_version_id),
        latest_version_id=str(latest.version_id) if latest else "",
        latest_version_name=latest.version_name if latest else "",
        update_available=update.update_available,
        bytes_to_download=update.bytes_to_download,
        bytes_to_write=update.bytes_to_write,
        latest_published_at=timestamp(latest.published_at) if latest else None,
        release_notes=latest.release_notes if latest else "",
        branch=update.branch,
    )


def _repair_chunk_pb(chunk: verification.RepairChunk, link: ChunkLink) -> pb.FileChunk:
    return pb.FileChunk(
        chunk_hash=chunk.chunk_id,
        offset=chunk.offset,
        size_bytes=chunk.size_bytes,
        url=link.url,
        url_expires_at=timestamp(link.expires_at),
        download_required=True,
        compressed_size_bytes=chunk.compressed_size_bytes,
    )


def _verification_pb(view: verification.VerificationView) -> pb.VerificationResult:
    result = view.verification
    return pb.VerificationResult(
        verification_id=str(result.verification_id),
        product_id=str(result.product_id),
        version_id=str(result.version_id),
        status=_VERIFICATION_STATUSES[result.status],
        checked_files_count=result.checked_files_count,
        corrupted_files_count=result.corrupted_files_count,
        missing_files_count=result.missing_files_count,
        damaged_files=[
            pb.DamagedFile(
                path=d.path,
                problem=_PROBLEMS[d.problem],
                expected_size_bytes=d.expected_size_bytes,
                expected_sha256=d.expected_sha256,
                chunks=[_repair_chunk_pb(c, view.links[(c.chunk_id, c.compressed_sha256)]) for c in d.chunks],
            )
            for d in result.damaged_files
        ],
        repair_size_bytes=result.repair_size_bytes,
        started_at=timestamp(result.started_at),
        completed_at=timestamp(result.completed_at),
    )


def _add_manifest_files(repeated, files: list[manifests.ManifestFile]) -> None:
    """Files and their chunks are built in place, straight from the chunk rows; a file's chunks share
    one expiry (a page holds thousands of chunks: this is the servicer's hot loop)."""
    add_file = repeated.add
    for file in files:
        message = add_file(
            path=file.path, size_bytes=file.size_bytes, sha256=file.sha256, write_required=file.write_required
        )
        add = message.chunks.add
        stamp = timestamp(file.url_expires_at)
        rows = zip(file.chunks, file.urls, strict=True)
        for (chunk_id, _, offset, size, compressed, required), url in rows:
            add(
                chunk_hash=chunk_id,
                offset=offset,
                size_bytes=size,
                url=url,
                url_expires_at=stamp,
                download_required=required,
                compressed_size_bytes=compressed,
            )


class ContentServicer:
    """Mixin of DownloadServiceServicer (servicer.py), which provides `self._deps`."""

    _deps: Deps

    async def BeginVersionUpload(self, request: pb.BeginVersionUploadRequest, context):
        require_service()
        v = Validator()
        product_id, name, branch, notes = _draft_fields(v, request)
        if not request.files:
            v.fail("files", "is required")
        v.check()
        draft = publishing.VersionDraft(product_id, name, branch, notes, _file_entries(request.files))
        begun = await publishing.begin_upload(self._deps, draft)
        return pb.BeginVersionUploadResponse(
            version_id=str(begun.version_id),
            missing_chunks=[
                pb.ChunkUploadTarget(
                    chunk_id=t.chunk_id, url=t.url, headers=t.headers, expires_at=timestamp(t.expires_at)
                )
                for t in begun.missing
            ],
            distinct_chunk_count=begun.distinct_chunk_count,
            stored_chunk_count=begun.stored_chunk_count,
        )

    async def CommitVersionUpload(self, request: pb.CommitVersionUploadRequest, context):
        require_service()
        v = Validator()
        version_id = v.uuid("version_id", request.version_id)
        v.check()
        published = await publishing.commit_upload(self._deps, version_id)
        return pb.CommitVersionUploadResponse(version=_published_pb(published))

    async def PublishProductVersion(self, request: pb.PublishProductVersionRequest, context):
        principal = require_service()
        v = Validator()
        product_id, name, branch, notes = _draft_fields(v, request)
        request_id = v.request_id(request.request_id)
        v.check()
        draft = publishing.VersionDraft(product_id, name, branch, notes, [])
        key = request_key(principal.subject, "PublishProductVersion", request_id)
        published = await publishing.publish_directory(self._deps, draft, request.source_path, replay_key=key)
        return pb.PublishProductVersionResponse(version=_published_pb(published))

    async def ListProductVersions(self, request: pb.ListProductVersionsRequest, context):
        user_id = current_user_id()
        v = Validator()
        product_id = v.uuid("product_id", request.product_id)
        branch = _branch(v, "branch", request.branch, default=None)
        page_size = v.page_size(request.page_size)
        v.check()
        page = await versions.list_versions(
            self._deps, user_id, product_id, branch, page_size, request.page_token
        )
        return pb.ListProductVersionsResponse(
            versions=[
                version_pb(
                    item.version, download_size_bytes=item.download_size_bytes, is_latest=item.is_latest
                )
                for item in page.versions
            ],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def CheckUpdates(self, request: pb.CheckUpdatesRequest, context):
        user_id = current_user_id()
        v = Validator()
        installed, seen = [], set()
        for i, item in enumerate(request.installed_products):
            product_id = v.uuid(f"installed_products[{i}].product_id", item.product_id)
            version_id = v.uuid(f"installed_products[{i}].installed_version_id", item.installed_version_id)
            if product_id in seen:
                v.fail(f"installed_products[{i}].product_id", "is a duplicate")
            seen.add(product_id)
            installed.append((product_id, version_id))
        v.check()
        found = await updates.check_updates(self._deps, user_id, installed)
        return pb.CheckUpdatesResponse(updates=[_update_pb(u) for u in found])

    async def VerifyInstallation(self, request: pb.VerifyInstallationRequest, context):
        user_id = current_user_id()
        v = Validator()
        product_id = v.uuid("product_id", request.product_id)
        version_id = v.uuid("version_id", request.version_id)
        files = catalog.installed_files(v, request.files, "files")
        request_id = v.request_id(request.request_id)
        v.check()
        view = await verification.verify_installation(
            self._deps, user_id, product_id, version_id, files, request_id
        )
        return pb.VerifyInstallationResponse(verification=_verification_pb(view))

    async def GetDownloadManifest(self, request: pb.GetDownloadManifestRequest, context):
        user_id = current_user_id()
        v = Validator()
        download_id = v.uuid("download_id", request.download_id)
        page_size = v.page_size(request.page_size)
        v.check()
        page = await manifests.manifest_page(
            self._deps, user_id, download_id, page_size=page_size, page_token=request.page_token
        )
        response = pb.GetDownloadManifestResponse(
            download_id=page.download_id,
            product_id=page.product_id,
            version_id=page.version_id,
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )
        _add_manifest_files(response.files, page.files)
        return response
