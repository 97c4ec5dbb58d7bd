"""A build on local disk, prepared for publishing: every file cut with the store's FastCDC parameters, every
chunk hashed and compressed, every file hashed, in parallel across cores. The work is what the contract
needs and no more: a distinct chunk is compressed (and its object hashed) once however often it repeats,
a file of one chunk takes that chunk's id as its hash instead of being hashed again, and an
incompressible chunk is framed as raw blocks instead of compressed (content_store/chunking.py).

Shared by the `publish` CLI (client/sdk/publishing.py) and PublishProductVersion
(server/downloads/publishing.py), so both cut, name and compress exactly alike. hashlib, zstandard and
pyfastcdc release the GIL on large buffers, so a thread pool scales across cores without copying the bytes
to other processes. A large file is memory-mapped and cut as it is listed, its chunks handed to the pool
in runs of a few MiB (one task per chunk cost a tenth of the chunk's hashing in hand-offs); files of at
most one chunk's minimum size go to the workers in batches, each read and prepared whole by one task, since
handing a task to a thread costs about as much as preparing a small file. Compressed chunks are kept in
memory up to a budget; beyond it (and for raw frames, which are only a copy) they are built again when
uploaded, the way the scan built them (no probe, no second hash: the declared hash is what binds them).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from content_store.chunking import (
    MIN_CHUNK_SIZE,
    ChunkRef,
    FileEntry,
    chunk_id,
    compressed_frame,
    cut,
    incompressible,
    path_problem,
    raw_frame,
    raw_frame_parts,
)

DEFAULT_CACHE_BYTES = 512 * 1024 * 1024


class BuildError(ValueError):
    """The directory can't be published as it is (missing, empty, a path the store refuses)."""


@dataclass
class Build:
    root: Path
    files: list[FileEntry]
    # Where each distinct chunk can be read again (relative path, offset, size), its object's SHA-256 as
    # declared, and whether that object is a raw frame: an upload rebuilds it without probing or hashing.
    locations: dict[str, tuple[str, int, int, str, bool]]
    _cache: dict[str, tuple[bytes, str]] = field(default_factory=dict, repr=False)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def compressed(self, chunk: str) -> tuple[bytes, str]:
        """(zstd bytes, their SHA-256 hex as the scan declared it) of a chunk of the build. Built again
        from the file when not kept, as the scan built it; should the file have changed since, the bytes
        no longer match the declared hash and the store refuses them (the presigned PUT is bound to it)."""
        if (hit := self._cache.get(chunk)) is not None:
            return hit
        path, offset, size, blob_hash, raw = self.locations[chunk]
        with open(self.root / path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        return (raw_frame(data) if raw else compressed_frame(data)), blob_hash

    def drop(self, chunk: str) -> None:
        """Forgets a chunk's cached compressed bytes (after it was uploaded)."""
        self._cache.pop(chunk, None)


def list_files(root: Path) -> list[tuple[str, int]]:
    """(relative `/`-separated path, size) of the regular files under `root`, sorted by path; symbolic
    links are not followed (neither linked files nor linked directories are part of a build)."""
    if not root.is_dir():
        raise BuildError(f"{root} is not a directory")
    found: list[tuple[str, int]] = []
    pending = [("", str(root))]
    while pending:
        prefix, directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((f"{prefix}{entry.name}/", entry.path))
                elif entry.is_file(follow_symlinks=False):
                    relative = prefix + entry.name
                    if (problem := path_problem(relative)) is not None:
                        raise BuildError(f"{relative!r}: path {problem}")
                    found.append((relative, entry.stat(follow_symlinks=False).st_size))
    if not found:
        raise BuildError(f"{root} holds no files")
    return sorted(found)


class _Compressions:
    """Each distinct chunk of a build is compressed once, by the first worker that hashes it; a repeat
    (a duplicate file, a repeated asset) takes that one's compressed size and SHA-256."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._first: dict[str, Future[_Object]] = {}

    def prepare(self, data: memoryview | bytes) -> tuple[str, bytes | None, Future[_Object]]:
        """(chunk id, its compressed bytes if this call compressed it, (size, SHA-256, raw) of the object).
        An incompressible chunk's object (raw blocks) is hashed piece by piece and never built here: it
        is only a copy of the chunk, so it is not worth memory (or the pages' first touch) until its
        upload."""
        cid = chunk_id(data)
        mine: Future[_Object] = Future()
        with self._lock:
            first = self._first.setdefault(cid, mine)
        if first is not mine:
            return cid, None, first
        if incompressible(data):
            digest, size = hashlib.sha256(), 0
            for part in raw_frame_parts(data):
                digest.update(part)
                size += len(part)
            mine.set_result((size, digest.hexdigest(), True))
            return cid, None, mine
        blob = compressed_frame(data)
        mine.set_result((len(blob), hashlib.sha256(blob).hexdigest(), False))
        return cid, blob, mine


# A chunk's object: its size, SHA-256 and whether it is a raw frame.
_Object = tuple[int, str, bool]
# One prepared chunk occurrence: offset, size, and what _Compressions.prepare answered for it.
_Chunk = tuple[int, int, str, bytes | None, Future[_Object]]


@dataclass
class _Prepared:
    size: int
    sha256: str
    chunks: list[_Chunk]


@dataclass
class _PendingFile:
    path: str
    size: int  # as listed: what the file counts against MAX_BYTES_IN_FLIGHT
    result: Callable[[], _Prepared]  # waits until the file is prepared


def scan(
    root: str | Path,
    *,
    workers: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> Build:
    """Prepares every file under `root`. `on_bytes(n)` is called (from worker threads) as chunks finish."""
    root = Path(root)
    build = Build(root, [], {})
    cache_room = [cache_bytes]
    window: deque[_PendingFile] = deque()
    in_flight = 0
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="publish") as pool:
        preparer = _Preparer(pool, root, on_bytes)
        for path, size in list_files(root):
            window.append(preparer.add(path, size))
            in_flight += size
            while window and (len(window) > MAX_FILES_IN_FLIGHT or in_flight > MAX_BYTES_IN_FLIGHT):
                preparer.flush()
                in_flight -= _collect(build, window.popleft(), cache_room)
        preparer.flush()
        while window:
            _collect(build, window.popleft(), cache_room)
    return build


# Files being prepared at once: bounds open memory maps (each holds a file descriptor) and results held.
MAX_FILES_IN_FLIGHT = 64
MAX_BYTES_IN_FLIGHT = 1024 * 1024 * 1024
# Small files (one chunk at most) go to a worker together, up to this many bytes or files per task.
SMALL_FILE_SIZE = MIN_CHUNK_SIZE
BATCH_BYTES = 2 * 1024 * 1024
BATCH_FILES = 32
# A large file's chunks go to the pool in runs of consecutive chunks of at least this many bytes: handing a
# task to a thread (queue, wake-up, future, the GIL passed back and forth) costs about 0.1 ms of CPU on a
# virtual machine, a tenth of what hashing a 1 MiB chunk costs; a run pays it once for several chunks and
# a large build still spreads over every core.
TASK_BYTES = 4 * 1024 * 1024


class _Preparer:
    """Hands files to the pool: a large one memory-mapped and cut here, a task per run of its chunks
    (and one for the file's hash); small ones in batches, a task reading and preparing each file of its
    batch whole."""

    def __init__(self, pool: ThreadPoolExecutor, root: Path, on_bytes: Callable[[int], None] | None):
        self._pool, self._root, self._on_bytes = pool, root, on_bytes
        self._compressions = _Compressions()
        self._batch: list[str] = []
        self._batch_bytes = 0
        self._batch_task: list[Future[list[_Prepared]]] = []  # the batch's task, once submitted

    def add(self, path: str, size: int) -> _PendingFile:
        if size > SMALL_FILE_SIZE:
            return _PendingFile(path, size, self._submit_large(path))
        task, index = self._batch_task, len(self._batch)
        self._batch.append(path)
        self._batch_bytes += size
        if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
            self.flush()
        return _PendingFile(path, size, lambda: task[0].result()[index])

    def flush(self) -> None:
        """Submits the batch being gathered (before anything waits for one of its files)."""
        if self._batch:
            self._batch_task.append(self._pool.submit(self._prepare_batch, self._batch))
            self._batch, self._batch_bytes, self._batch_task = [], 0, []

    def _prepare_batch(self, paths: list[str]) -> list[_Prepared]:
        prepared = []
        buffer = _take_buffer()
        try:
            for path in paths:
                data = _read(self._root / path, buffer)
                chunks = self._prepare_run(list(cut(data)), report=False)
                digest = chunks[0][2] if len(chunks) == 1 else hashlib.sha256(data).hexdigest()
                prepared.append(_Prepared(len(data), digest, chunks))
                if self._on_bytes is not None:
                    self._on_bytes(len(data))
        finally:
            _idle_buffers.put(buffer)
        return prepared

    def _prepare_run(self, pieces: list[tuple[int, memoryview]], *, report: bool = True) -> list[_Chunk]:
        chunks = [(offset, len(piece), *self._compressions.prepare(piece)) for offset, piece in pieces]
        if report and self._on_bytes is not None:
            self._on_bytes(sum(len(piece) for _, piece in pieces))
        return chunks

    def _submit_large(self, path: str) -> Callable[[], _Prepared]:
        """Cuts the file here and hands its chunks to the pool in runs of about TASK_BYTES, each run
        submitted as soon as it is cut; the file's hash is one more task (none for a single chunk)."""
        data, size = _read_only_view(self._root / path)
        runs: list[Future[list[_Chunk]]] = []
        run: list[tuple[int, memoryview]] = []
        run_bytes = count = 0
        for offset, piece in cut(data):
            run.append((offset, piece))
            run_bytes, count = run_bytes + len(piece), count + 1
            if run_bytes >= TASK_BYTES:
                runs.append(self._pool.submit(self._prepare_run, run))
                run, run_bytes = [], 0
        if run:
            runs.append(self._pool.submit(self._prepare_run, run))
        file_hash = None if count == 1 else self._pool.submit(_hash_file, data)

        def result() -> _Prepared:
            prepared = [chunk for task in runs for chunk in task.result()]
            digest = file_hash.result() if file_hash is not None else prepared[0][2]
            return _Prepared(size, digest, prepared)

        return result


def _collect(build: Build, pending: _PendingFile, cache_room: list[int]) -> int:
    prepared = pending.result()
    refs = []
    for offset, length, cid, blob, compressed in prepared.chunks:
        compressed_size, blob_hash, raw = compressed.result()
        refs.append(ChunkRef(cid, offset, length, compressed_size, blob_hash))
        if cid not in build.locations:
            build.locations[cid] = (pending.path, offset, length, blob_hash, raw)
        if blob is not None and compressed_size <= cache_room[0]:
            build._cache[cid] = (blob, blob_hash)
            cache_room[0] -= compressed_size
    build.files.append(FileEntry(pending.path, prepared.size, prepared.sha256, tuple(refs)))
    return pending.size


def _hash_file(data: memoryview | bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Read buffers of small files, reused by every batch (so a small file costs no fresh memory), each one
# byte longer than a small file: a file that fills it has grown since it was listed and is read whole.
_idle_buffers: queue.SimpleQueue[bytearray] = queue.SimpleQueue()


def _take_buffer() -> bytearray:
    try:
        return _idle_buffers.get_nowait()
    except queue.Empty:
        return bytearray(SMALL_FILE_SIZE + 1)


def _read(path: Path, buffer: bytearray) -> memoryview | bytes:
    """A small file's bytes, read into `buffer` (a view of it, valid until the buffer is reused)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        view, filled = memoryview(buffer), 0
        while filled < len(buffer) and (got := os.readv(fd, [view[filled:]])):
            filled += got
        if filled < len(buffer):
            return view[:filled]
        rest = iter(lambda: os.read(fd, 1024 * 1024), b"")
        return b"".join([bytes(buffer), *rest])
    finally:
        os.close(fd)


def _read_only_view(path: Path) -> tuple[memoryview | bytes, int]:
    """The file's bytes, memory-mapped (no copy; unmapped when the last view of it goes), and its size."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return b"", 0
        return memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)), size
