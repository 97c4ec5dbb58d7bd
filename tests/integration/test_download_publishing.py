"""Publishing against the real stack: the upload protocol (Begin → presigned PUTs → Commit), the verifier,
dedup across files, versions and products, resumption, and what the catalog then says about versions."""

from __future__ import annotations

import hashlib
import random
import uuid

import grpc
import httpx
import pytest

from client.sdk.publishing import begin_request
from content_store.builds import scan
from content_store.chunking import compress, object_key, raw_frame
from download.v1 import download_service_pb2 as pb
from download.v1 import download_service_pb2_grpc
from server.core.s3 import ObjectStore
from server.downloads import catalog
from tests.support.auth import service_metadata, user_metadata
from tests.support.grpc_errors import failure
from tests.support.ownership import grant
from tests.support.publishing import publish_files, write_tree

RUN = uuid.uuid4().hex  # content differs per run: the chunk store keeps what earlier runs stored


def seeded(seed: int, size: int) -> bytes:
    return random.Random(f"{RUN}-{seed}").randbytes(size)


@pytest.fixture
def downloads(channel) -> download_service_pb2_grpc.DownloadServiceStub:
    return download_service_pb2_grpc.DownloadServiceStub(channel)


async def test_a_published_version_is_the_latest_of_its_branch_and_dedups_repeated_content(
    grpc_target, sessions, tmp_path
):
    product = uuid.uuid4()
    shared = seeded(1, 3 * 1024 * 1024)
    files = {"bin/game.bin": shared, "bin/copy.bin": shared, "readme.txt": RUN.encode(), "empty.dat": b""}
    report = await publish_files(grpc_target, product, "1.0.0", files, tmp_path / "v1", release_notes="first")

    assert report.version.version_name == "1.0.0"
    assert report.version.branch == "public"
    assert report.version.file_count == 4
    assert report.version.total_size_bytes == 2 * len(shared) + len(RUN)
    # The duplicate file adds chunk occurrences but no distinct chunks.
    assert report.version.chunk_count == 2 * (report.distinct_chunks - 1) + 1
    assert report.uploaded_chunks == report.distinct_chunks == report.version.new_chunk_count
    async with sessions() as session:
        latest = await catalog.resolve_version(session, product, branch=None, version_id=None)
        plan = await catalog.transfer_plan(session, latest.version_id)
    assert str(latest.version_id) == report.version.version_id
    assert latest.release_notes == "first"
    assert plan.bytes_to_download == report.version.download_size_bytes == report.uploaded_bytes
    assert plan.chunks_to_download == report.distinct_chunks
    assert plan.bytes_to_write == report.version.total_size_bytes
    assert plan.files_to_write == 4


async def test_republishing_the_same_bytes_elsewhere_uploads_nothing(grpc_target, sessions, tmp_path):
    content = {"data.bin": seeded(2, 2 * 1024 * 1024)}
    first = await publish_files(grpc_target, uuid.uuid4(), "1", content, tmp_path / "a")
    other_product = uuid.uuid4()
    second = await publish_files(grpc_target, other_product, "1", content, tmp_path / "b", branch="beta")
    assert first.uploaded_chunks > 0
    assert second.uploaded_chunks == 0 and second.version.new_chunk_count == 0
    assert second.deduplicated_chunks == first.distinct_chunks
    async with sessions() as session:
        with pytest.raises(Exception) as absent:  # nothing on `public`, only on `beta`
            await catalog.resolve_version(session, other_product, branch="public", version_id=None)
        beta = await catalog.resolve_version(session, other_product, branch="beta", version_id=None)
    assert absent.value.reason == "PRODUCT_VERSION_NOT_FOUND"
    assert str(beta.version_id) == second.version.version_id


async def test_incompressible_chunks_are_stored_as_raw_frames_the_verifier_accepts(
    grpc_target, settings, tmp_path
):
    """Random bytes go to the store as zstd frames of raw blocks (never run through the compressor),
    text compressed, a chunk of random head and text tail compressed too; the verifier reads every one
    back, decompresses and hashes it, and the version commits."""
    noise, text = (
        seeded(7, 3 * 1024 * 1024),
        b"".join(b"%s line %d\n" % (RUN.encode(), i) for i in range(60_000)),
    )
    files = {"assets.pak": noise, "script.txt": text, "mixed.bin": seeded(8, 700_000) + text[:200_000]}
    report = await publish_files(grpc_target, uuid.uuid4(), "1.0", files, tmp_path / "v1")
    assert report.version.new_chunk_count == report.distinct_chunks  # all verified and committed
    build = scan(tmp_path / "v1")
    async with ObjectStore(settings) as store:
        for entry in build.files:
            content = files[entry.path]
            for ref in entry.chunks:
                piece = content[ref.offset : ref.offset + ref.size]
                stored = await store.get(object_key(ref.chunk_id, ref.compressed_sha256))
                assert stored == compress(piece)
                if entry.path == "assets.pak":
                    assert stored == raw_frame(piece)
                else:  # the text (all of script.txt, the last 200,000 bytes of mixed.bin) shrinks
                    assert len(stored) < ref.size - 150_000, entry.path


async def test_a_committed_version_name_cannot_be_published_again(grpc_target, downloads, tmp_path):
    product = uuid.uuid4()
    await publish_files(grpc_target, product, "2.0", {"a": b"a"}, tmp_path / "a")
    build = scan(write_tree(tmp_path / "b", {"a": b"b"}))
    code, reason, _ = await failure(
        downloads.BeginVersionUpload(
            begin_request(build, str(product), "2.0", "", ""), metadata=service_metadata()
        )
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "PRODUCT_VERSION_ALREADY_EXISTS")


def _one_file_request(product: uuid.UUID, content: bytes, name: str = "1") -> pb.BeginVersionUploadRequest:
    blob = compress(content)
    chunk = pb.UploadChunk(
        chunk_id=hashlib.sha256(content).hexdigest(),
        offset=0,
        size_bytes=len(content),
        compressed_size_bytes=len(blob),
        compressed_sha256=hashlib.sha256(blob).hexdigest(),
    )
    upload = pb.UploadFile(
        path="f.bin", size_bytes=len(content), sha256=hashlib.sha256(content).hexdigest(), chunks=[chunk]
    )
    return pb.BeginVersionUploadRequest(product_id=str(product), version_name=name, files=[upload])


async def test_a_forged_chunk_is_rejected_deleted_and_never_stored(downloads, sessions, settings):
    """The uploader declares a chunk id whose bytes it does not send: the presigned PUT binds only the
    compressed hash the uploader chose, so the store accepts the object, but the verifier refuses it."""
    product = uuid.uuid4()
    genuine = seeded(3, 300_000)
    request = _one_file_request(product, genuine)
    forged_blob = compress(seeded(4, 300_000))
    chunk = request.files[0].chunks[0]
    chunk.compressed_size_bytes = len(forged_blob)
    chunk.compressed_sha256 = hashlib.sha256(forged_blob).hexdigest()
    begun = await downloads.BeginVersionUpload(request, metadata=service_metadata())
    [target] = begun.missing_chunks
    async with httpx.AsyncClient() as http:
        stored = await http.put(target.url, content=forged_blob, headers=dict(target.headers))
    assert stored.status_code == 200

    code, reason, _ = await failure(
        downloads.CommitVersionUpload(
            pb.CommitVersionUploadRequest(version_id=begun.version_id), metadata=service_metadata()
        )
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "VERSION_UPLOAD_INCOMPLETE")
    async with ObjectStore(settings) as store:  # the forged object is gone from the store
        assert await store.head(object_key(chunk.chunk_id, chunk.compressed_sha256)) is None
    async with sessions() as session:
        with pytest.raises(Exception) as absent:
            await catalog.resolve_version(session, product, branch=None, version_id=None)
    assert absent.value.reason == "PRODUCT_VERSION_NOT_FOUND"

    # The honest bytes under the same chunk id then verify, and the version commits.
    honest = _one_file_request(product, genuine)
    resumed = await downloads.BeginVersionUpload(honest, metadata=service_metadata())
    assert resumed.version_id == begun.version_id
    [target] = resumed.missing_chunks
    async with httpx.AsyncClient() as http:
        ok = await http.put(target.url, content=compress(genuine), headers=dict(target.headers))
    assert ok.status_code == 200
    committed = await downloads.CommitVersionUpload(
        pb.CommitVersionUploadRequest(version_id=begun.version_id), metadata=service_metadata()
    )
    assert committed.version.new_chunk_count == 1


async def test_an_interrupted_upload_resumes_with_only_what_is_missing(downloads):
    product = uuid.uuid4()
    request = _one_file_request(product, seeded(5, 200_000))
    first = await downloads.BeginVersionUpload(request, metadata=service_metadata())
    code, reason, _ = await failure(
        downloads.CommitVersionUpload(
            pb.CommitVersionUploadRequest(version_id=first.version_id), metadata=service_metadata()
        )
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "VERSION_UPLOAD_INCOMPLETE")
    [target] = first.missing_chunks
    async with httpx.AsyncClient() as http:
        await http.put(target.url, content=compress(seeded(5, 200_000)), headers=dict(target.headers))
    resumed = await downloads.BeginVersionUpload(request, metadata=service_metadata())
    assert resumed.version_id == first.version_id
    assert list(resumed.missing_chunks) == []  # uploaded, waiting for the commit to verify it
    committed = await downloads.CommitVersionUpload(
        pb.CommitVersionUploadRequest(version_id=first.version_id), metadata=service_metadata()
    )
    again = await downloads.CommitVersionUpload(
        pb.CommitVersionUploadRequest(version_id=first.version_id), metadata=service_metadata()
    )
    assert again.version == committed.version


@pytest.mark.parametrize(
    ("path", "field"),
    [("../escape", "files[0].path"), ("/etc/passwd", "files[0].path"), ("a//b", "files[0].path")],
)
async def test_bad_paths_are_refused_and_nothing_is_written(downloads, sessions, path, field):
    product = uuid.uuid4()
    request = _one_file_request(product, b"x" * 10)
    request.files[0].path = path
    code, reason, fields = await failure(downloads.BeginVersionUpload(request, metadata=service_metadata()))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", [field])


async def test_chunk_lists_must_cover_their_file_exactly(downloads):
    request = _one_file_request(uuid.uuid4(), b"y" * 1000)
    request.files[0].size_bytes = 1001
    extra = pb.UploadFile()
    extra.CopyFrom(request.files[0])
    extra.size_bytes = 1000
    request.files.append(extra)  # same path twice
    code, reason, fields = await failure(downloads.BeginVersionUpload(request, metadata=service_metadata()))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert fields == ["files[0].chunks", "files[1].path"]


async def test_publishing_needs_the_service_role(downloads):
    user = uuid.uuid4()
    code, reason, _ = await failure(
        downloads.BeginVersionUpload(_one_file_request(uuid.uuid4(), b"z"), metadata=user_metadata(user))
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


async def test_owners_list_versions_newest_first_and_others_see_nothing(
    grpc_target, downloads, sessions, tmp_path
):
    product, owner, stranger = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await grant(sessions, owner, product)
    await publish_files(grpc_target, product, "1", {"a": b"1"}, tmp_path / "1")
    await publish_files(grpc_target, product, "2-beta", {"a": b"2"}, tmp_path / "2", branch="beta")
    await publish_files(grpc_target, product, "3", {"a": b"3"}, tmp_path / "3")
    listed = await downloads.ListProductVersions(
        pb.ListProductVersionsRequest(product_id=str(product)), metadata=user_metadata(owner)
    )
    assert [(v.version_name, v.branch, v.is_latest) for v in listed.versions] == [
        ("3", "public", True),
        ("2-beta", "beta", True),
        ("1", "public", False),
    ]
    beta = await downloads.ListProductVersions(
        pb.ListProductVersionsRequest(product_id=str(product), branch="beta", page_size=1),
        metadata=user_metadata(owner),
    )
    assert [v.version_name for v in beta.versions] == ["2-beta"] and beta.total_size == 1
    code, reason, _ = await failure(
        downloads.ListProductVersions(
            pb.ListProductVersionsRequest(product_id=str(product)), metadata=user_metadata(stranger)
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PRODUCT_ACCESS_DENIED")


async def test_publish_product_version_publishes_a_directory_on_the_servers_host(downloads, tmp_path):
    product = uuid.uuid4()
    source = write_tree(
        tmp_path / "build", {"bin/a.bin": seeded(6, 1_500_000), "b.txt": f"notes {RUN}".encode()}
    )
    request = pb.PublishProductVersionRequest(
        product_id=str(product),
        version_name="9.0",
        source_path=str(source),
        branch="beta",
        release_notes="from the server",
        request_id=str(uuid.uuid4()),
    )
    first = await downloads.PublishProductVersion(request, metadata=service_metadata())
    assert (first.version.version_name, first.version.branch, first.version.file_count) == ("9.0", "beta", 2)
    assert first.version.new_chunk_count == first.version.chunk_count >= 2  # all new, no repeats
    assert first.version.release_notes == "from the server"
    replayed = await downloads.PublishProductVersion(request, metadata=service_metadata())
    assert replayed.version == first.version
    request.request_id = str(uuid.uuid4())
    code, reason, _ = await failure(downloads.PublishProductVersion(request, metadata=service_metadata()))
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "PRODUCT_VERSION_ALREADY_EXISTS")


@pytest.mark.parametrize("source", ["relative/dir", "/nonexistent/build", ""])
async def test_publish_product_version_refuses_a_source_it_cannot_publish(downloads, source):
    request = pb.PublishProductVersionRequest(
        product_id=str(uuid.uuid4()), version_name="1", source_path=source
    )
    code, reason, fields = await failure(
        downloads.PublishProductVersion(request, metadata=service_metadata())
    )
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["source_path"])
