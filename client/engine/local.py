"""Reading what is on disk: a file's SHA-256, hashes of its byte ranges at a version's chunk offsets (so
VerifyInstallation names only the bad chunks), and one chunk's bytes checked against its id before it is
copied instead of downloaded. Blocking I/O: callers run these in a thread (hashlib releases the GIL)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from client.engine.plan import FileSpec
from client.sdk.downloads import LocalFile

BLOCK = 1024 * 1024


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def read_range(path: Path, offset: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def read_chunk(path: Path, offset: int, size: int, chunk_id: str) -> bytes | None:
    """The `size` bytes at `offset` of `path` if they hash to `chunk_id`, else None (missing, changed)."""
    try:
        data = read_range(path, offset, size)
    except OSError:
        return None
    return data if len(data) == size and hashlib.sha256(data).hexdigest() == chunk_id else None


def examine(root: Path, spec: FileSpec) -> LocalFile | None:
    """The installed copy of `spec` under `root` as VerifyInstallation takes it (with range hashes at the
    version's chunk offsets when it differs), or None when the file is missing."""
    path = root / spec.path
    try:
        size = path.stat().st_size
        sha = file_sha256(path)
    except OSError:
        return None
    if size == spec.size and sha == spec.sha256:
        return LocalFile(spec.path, size, sha)
    ranges = []
    with open(path, "rb") as handle:
        for chunk in spec.chunks:
            if chunk.offset + chunk.size > size:
                break
            handle.seek(chunk.offset)
            ranges.append((chunk.offset, chunk.size, hashlib.sha256(handle.read(chunk.size)).hexdigest()))
    return LocalFile(spec.path, size, sha, tuple(ranges))
