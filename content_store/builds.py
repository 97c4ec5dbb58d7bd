"""A build on local disk, prepared for publishing: every file cut with the store's FastCDC parameters, every
chunk hashed and compressed, every file hashed, in parallel across cores. The work is what the contract
needs and no more: a distinct chunk is compressed (and its object hashed) once however often it repeats,
and a file of one chunk takes that chunk's id as its hash instead of being hashed again.

Shared by the `publish` CLI (client/sdk/publishing.py) and PublishProductVersion
(server/downloads/publishing.py), so both cut, name and compress exactly alike. hashlib, zstandard and
pyfastcdc release the GIL on large buffers, so a thread pool scales across cores without copying the bytes
to other processes. Compressed chunks are kept in memory up to a budget; beyond it they are compressed
again when uploaded.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from content_store.chunking import ChunkRef, FileEntry, chunk_id, compress, cut, path_problem

DEFAULT_CACHE_BYTES = 512 * 1024 * 1024


class BuildError(ValueError):
    """The directory can't be published as it is (missing, empty, a path the store refuses)."""


@dataclass
class Build:
    root: Path
    files: list[FileEntry]
    # Where each distinct chunk can be read again: (relative path, offset, size).
    locations: dict[str, tuple[str, int, int]]
    _cache: dict[str, tuple[bytes, str]] = field(default_factory=dict, repr=False)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def compressed(self, chunk: str) -> tuple[bytes, str]:
        """(zstd bytes, their SHA-256 hex) of a chunk of the build."""
        if (hit := self._cache.get(chunk)) is not None:
            return hit
        path, offset, size = self.locations[chunk]
        with open(self.root / path, "rb") as handle:
            handle.seek(offset)
            blob = compress(handle.read(size))
        return blob, hashlib.sha256(blob).hexdigest()

    def drop(self, chunk: str) -> None:
        """Forgets a chunk's cached compressed bytes (after it was uploaded)."""
        self._cache.pop(chunk, None)


def list_files(root: Path) -> list[str]:
    """Relative `/`-separated paths of the regular files under `root`, sorted; symbolic links are not
    followed (neither linked files nor linked directories are part of a build)."""
    if not root.is_dir():
        raise BuildError(f"{root} is not a directory")
    found = []
    for directory, subdirs, names in os.walk(root, followlinks=False):
        subdirs.sort()
        for name in names:
            full = Path(directory, name)
            if full.is_symlink() or not full.is_file():
                continue
            relative = full.relative_to(root).as_posix()
            if (problem := path_problem(relative)) is not None:
                raise BuildError(f"{relative!r}: path {problem}")
            found.append(relative)
    if not found:
        raise BuildError(f"{root} holds no files")
    return sorted(found)


class _Compressions:
    """Each distinct chunk of a build is compressed once, by the first worker that hashes it; a repeat
    (a duplicate file, a repeated asset) takes that one's compressed size and SHA-256."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._first: dict[str, Future[tuple[int, str]]] = {}

    def prepare(self, data: memoryview) -> tuple[str, bytes | None, Future[tuple[int, str]]]:
        """(chunk id, its compressed bytes if this call compressed it, (size, SHA-256) of those bytes)."""
        cid = chunk_id(data)
        mine: Future[tuple[int, str]] = Future()
        with self._lock:
            first = self._first.setdefault(cid, mine)
        if first is not mine:
            return cid, None, first
        blob = compress(data)
        mine.set_result((len(blob), hashlib.sha256(blob).hexdigest()))
        return cid, blob, mine


def _hash_file(data: memoryview | bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    compressions = _Compressions()
    cache_room = [cache_bytes]
    window: deque[_PendingFile] = deque()
    in_flight = 0
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="publish") as pool:
        for path in list_files(root):
            pending = _submit(pool, compressions, root, path, on_bytes)
            window.append(pending)
            in_flight += pending.size
            while window and (len(window) > MAX_FILES_IN_FLIGHT or in_flight > MAX_BYTES_IN_FLIGHT):
                in_flight -= _collect(build, window.popleft(), cache_room)
        while window:
            _collect(build, window.popleft(), cache_room)
    return build


# Files being prepared at once: bounds open memory maps (each holds a file descriptor) and results held.
MAX_FILES_IN_FLIGHT = 64
MAX_BYTES_IN_FLIGHT = 1024 * 1024 * 1024


@dataclass
class _PendingFile:
    path: str
    size: int
    file_hash: Future[str] | None  # None: the file is one chunk, whose id is its hash
    chunks: list[tuple[int, int, Future[tuple[str, bytes | None, Future[tuple[int, str]]]]]]


def _submit(
    pool: ThreadPoolExecutor,
    compressions: _Compressions,
    root: Path,
    path: str,
    on_bytes: Callable[[int], None] | None,
) -> _PendingFile:
    data, size = _read_only_view(root / path)
    chunks = [(offset, len(piece), pool.submit(compressions.prepare, piece)) for offset, piece in cut(data)]
    if on_bytes is not None:
        for _, length, future in chunks:
            future.add_done_callback(lambda _f, n=length: on_bytes(n))
    whole_file_is_one_chunk = len(chunks) == 1
    return _PendingFile(
        path, size, None if whole_file_is_one_chunk else pool.submit(_hash_file, data), chunks
    )


def _collect(build: Build, pending: _PendingFile, cache_room: list[int]) -> int:
    refs = []
    for offset, length, future in pending.chunks:
        cid, blob, compressed = future.result()
        compressed_size, blob_hash = compressed.result()
        refs.append(ChunkRef(cid, offset, length, compressed_size, blob_hash))
        if cid not in build.locations:
            build.locations[cid] = (pending.path, offset, length)
        if blob is not None and compressed_size <= cache_room[0]:
            build._cache[cid] = (blob, blob_hash)
            cache_room[0] -= compressed_size
    file_hash = pending.file_hash.result() if pending.file_hash is not None else refs[0].chunk_id
    build.files.append(FileEntry(pending.path, pending.size, file_hash, tuple(refs)))
    return pending.size


def _read_only_view(path: Path) -> tuple[memoryview | bytes, int]:
    """The file's bytes, memory-mapped (no copy; unmapped when the last view of it goes), and its size."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return b"", 0
        return memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)), size
