"""Publishing a build (what the `publish` CLI runs): prepare the directory locally (cut, hash, compress in
parallel; content_store/builds.py, the store's own rules), BeginVersionUpload, PUT only the chunks the
store lacks through their presigned links (bounded concurrency: a thread per upload in flight, each with
keep-alive connections; retries), CommitVersionUpload.

Interrupted and run again, Begin resumes the same version and lists only what is still missing.
"""

from __future__ import annotations

import asyncio
import http.client
import queue
import random
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from client.sdk.connection import Connection
from content_store.builds import Build, scan
from download.v1 import download_service_pb2 as pb
from download.v1 import download_service_pb2_grpc

UPLOAD_CONCURRENCY = 8
UPLOAD_ATTEMPTS = 5
UPLOAD_TIMEOUT = 60.0  # seconds to connect, and between two socket operations of a PUT


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


class _Connections:
    """Keep-alive connections by scheme, host and port, serving one upload at a time. http.client sends
    a body straight from its buffer (sendall); httpx cost four times the CPU per uploaded MiB, more than
    preparing the bytes did, as its transports copy the unsent rest of a body after every partial socket
    write (httpcore's sync stream slices it, asyncio's transport buffer moves it)."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str, int | None], http.client.HTTPConnection] = {}

    def put(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """PUTs `body` to `url`; returns the status. A connection that failed is dropped, not reused."""
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.hostname or "", parts.port)
        connection = self._open.get(key)
        if connection is None:
            kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            connection = self._open[key] = kind(key[1], parts.port, timeout=UPLOAD_TIMEOUT)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("PUT", target, body=body, headers=headers)
            reply = connection.getresponse()
            reply.read()
        except BaseException:
            connection.close()
            del self._open[key]
            raise
        return reply.status

    def close(self) -> None:
        for connection in self._open.values():
            connection.close()
        self._open.clear()


def _put(connections: _Connections, target: pb.ChunkUploadTarget, blob: bytes) -> None:
    """One chunk PUT, retried with jittered backoff on a network error or a 5xx; a 4xx is final."""
    headers = dict(target.headers)
    for attempt in range(UPLOAD_ATTEMPTS):
        try:
            status = connections.put(target.url, blob, headers)
        except (OSError, http.client.HTTPException) as exc:
            failure = f"{type(exc).__name__}"
        else:
            if status < 300:
                return
            if status < 500:
                raise UploadError(f"the store refused chunk {target.chunk_id[:12]}… ({status})")
            failure = f"HTTP {status}"
        if attempt < UPLOAD_ATTEMPTS - 1:
            time.sleep(random.uniform(0, min(5.0, 0.2 * 2**attempt)))
    raise UploadError(f"chunk {target.chunk_id[:12]}… failed {UPLOAD_ATTEMPTS} times ({failure})")


async def upload_missing(
    build: Build,
    targets: list[pb.ChunkUploadTarget],
    *,
    concurrency: int = UPLOAD_CONCURRENCY,
    on_uploaded: Callable[[int], None] | None = None,
) -> int:
    """PUTs each missing chunk through its presigned link from `concurrency` threads; returns the
    compressed bytes sent. The first chunk that fails for good stops the ones not yet started."""
    idle: queue.SimpleQueue[_Connections] = queue.SimpleQueue()

    def upload(target: pb.ChunkUploadTarget) -> int:
        try:
            connections = idle.get_nowait()
        except queue.Empty:
            connections = _Connections()
        try:
            blob, _ = build.compressed(target.chunk_id)
            _put(connections, target, blob)
        finally:
            idle.put(connections)
        build.drop(target.chunk_id)
        if on_uploaded is not None:
            on_uploaded(len(blob))
        return len(blob)

    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="upload")
    try:
        return sum(await asyncio.gather(*(loop.run_in_executor(pool, upload, t) for t in targets)))
    finally:
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        while not idle.empty():
            idle.get_nowait().close()


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
