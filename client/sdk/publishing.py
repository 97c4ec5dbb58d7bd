"""Publishing a build (what the `publish` CLI runs): prepare the directory locally (cut, hash, compress in
parallel; content_store/builds.py, the store's own rules), BeginVersionUpload, PUT only the chunks the
store lacks through their presigned links (bounded concurrency, retries), CommitVersionUpload.

Interrupted and run again, Begin resumes the same version and lists only what is still missing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from client.sdk.connection import Connection
from content_store.builds import Build, scan
from download.v1 import download_service_pb2 as pb
from download.v1 import download_service_pb2_grpc

UPLOAD_CONCURRENCY = 8
UPLOAD_ATTEMPTS = 5


class UploadError(Exception):
    """A chunk could not be uploaded after every retry (the store kept refusing or was unreachable)."""


@dataclass(frozen=True)
class PublishReport:
    version: pb.ProductVersion
    file_count: int
    total_bytes: int
    distinct_chunks: int
    uploaded_chunks: int  # new to the store, sent by this run
    deduplicated_chunks: int  # already in the store (this or earlier runs, other versions or products)
    uploaded_bytes: int  # compressed bytes sent
    prepare_seconds: float  # local chunking, hashing and compression
    upload_seconds: float  # the PUTs of the missing chunks
    commit_seconds: float  # the server's verification of the new chunks and the commit

    @property
    def prepare_throughput(self) -> float:
        """Bytes per second of local chunking, hashing and compression."""
        return self.total_bytes / self.prepare_seconds if self.prepare_seconds else 0.0


def begin_request(
    build: Build, product_id: str, version_name: str, branch: str, release_notes: str
) -> pb.BeginVersionUploadRequest:
    return pb.BeginVersionUploadRequest(
        product_id=product_id,
        version_name=version_name,
        branch=branch,
        release_notes=release_notes,
        files=[
            pb.UploadFile(
                path=f.path,
                size_bytes=f.size,
                sha256=f.sha256,
                chunks=[
                    pb.UploadChunk(
                        chunk_id=c.chunk_id,
                        offset=c.offset,
                        size_bytes=c.size,
                        compressed_size_bytes=c.compressed_size,
                        compressed_sha256=c.compressed_sha256,
                    )
                    for c in f.chunks
                ],
            )
            for f in build.files
        ],
    )


async def _put(http: httpx.AsyncClient, target: pb.ChunkUploadTarget, blob: bytes) -> None:
    """One chunk PUT, retried with jittered backoff on a network error or a 5xx; a 4xx is final."""
    for attempt in range(UPLOAD_ATTEMPTS):
        try:
            reply = await http.put(target.url, content=blob, headers=dict(target.headers))
        except httpx.TransportError as exc:
            failure = f"{type(exc).__name__}"
        else:
            if reply.status_code < 300:
                return
            if reply.status_code < 500:
                raise UploadError(f"the store refused chunk {target.chunk_id[:12]}… ({reply.status_code})")
            failure = f"HTTP {reply.status_code}"
        if attempt < UPLOAD_ATTEMPTS - 1:
            await asyncio.sleep(random.uniform(0, min(5.0, 0.2 * 2**attempt)))
    raise UploadError(f"chunk {target.chunk_id[:12]}… failed {UPLOAD_ATTEMPTS} times ({failure})")


async def upload_missing(
    build: Build,
    targets: list[pb.ChunkUploadTarget],
    *,
    concurrency: int = UPLOAD_CONCURRENCY,
    on_uploaded: Callable[[int], None] | None = None,
) -> int:
    """PUTs each missing chunk through its presigned link; returns the compressed bytes sent."""
    gate = asyncio.Semaphore(concurrency)
    sent = 0

    async def one(http: httpx.AsyncClient, target: pb.ChunkUploadTarget) -> None:
        nonlocal sent
        async with gate:
            blob, _ = await asyncio.to_thread(build.compressed, target.chunk_id)
            await _put(http, target, blob)
            build.drop(target.chunk_id)
        sent += len(blob)
        if on_uploaded is not None:
            on_uploaded(len(blob))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0), limits=limits) as http:
        await asyncio.gather(*(one(http, t) for t in targets))
    return sent


async def publish(
    conn: Connection,
    root: str | Path,
    *,
    product_id: str,
    version_name: str,
    branch: str = "",
    release_notes: str = "",
    workers: int | None = None,
    on_prepared: Callable[[int], None] | None = None,
    on_missing: Callable[[int, int], None] | None = None,
    on_uploaded: Callable[[int], None] | None = None,
) -> PublishReport:
    """Publishes the directory `root` as a version; callbacks report progress (prepared bytes, then the
    number and compressed bytes of chunks to upload, then uploaded bytes)."""
    stub = download_service_pb2_grpc.DownloadServiceStub(conn.channel)
    started = time.perf_counter()
    build = await asyncio.to_thread(scan, root, workers=workers, on_bytes=on_prepared)
    prepared = time.perf_counter()
    begun = await conn.call(
        stub.BeginVersionUpload,
        begin_request(build, product_id, version_name, branch, release_notes),
        timeout=300.0,
    )
    if on_missing is not None:
        sizes = {c.chunk_id: c.compressed_size for f in build.files for c in f.chunks}
        on_missing(len(begun.missing_chunks), sum(sizes[t.chunk_id] for t in begun.missing_chunks))
    uploading = time.perf_counter()
    sent = await upload_missing(build, list(begun.missing_chunks), on_uploaded=on_uploaded)
    uploaded = time.perf_counter()
    committed = await conn.call(
        stub.CommitVersionUpload, pb.CommitVersionUploadRequest(version_id=begun.version_id), timeout=600.0
    )
    return PublishReport(
        version=committed.version,
        file_count=len(build.files),
        total_bytes=build.total_bytes,
        distinct_chunks=begun.distinct_chunk_count,
        uploaded_chunks=len(begun.missing_chunks),
        deduplicated_chunks=begun.distinct_chunk_count - len(begun.missing_chunks),
        uploaded_bytes=sent,
        prepare_seconds=prepared - started,
        upload_seconds=uploaded - uploading,
        commit_seconds=time.perf_counter() - uploaded,
    )
