"""The chunk store's fixed rules (pure; no I/O): how files are cut, named, compressed and listed.

One parameter set for the whole store (SPEC §6 Downloads): FastCDC with min 256 KiB, average 1 MiB and
max 4 MiB, so an insertion or deletion in the middle of a file changes one or two chunks instead of every
chunk after it. A chunk's id is the SHA-256 (lowercase hex) of its uncompressed bytes; it is stored as a
zstd frame (compressed, or raw blocks when zstd can't shrink it). The publisher (client/sdk/publishing.py)
and the server (publishing, verification) use these same functions, so both sides agree byte for byte.
"""

from __future__ import annotations

import hashlib
import queue
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import zstandard
from pyfastcdc import FastCDC

MIN_CHUNK_SIZE = 256 * 1024
AVG_CHUNK_SIZE = 1024 * 1024
MAX_CHUNK_SIZE = 4 * 1024 * 1024
ZSTD_LEVEL = 3
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
MAX_PATH_LEN = 1024
MAX_PATH_SEGMENT_LEN = 255
# Characters a path may not hold anywhere: control characters and the Windows-reserved ones, since an
# installation must be writable on every client OS.
_FORBIDDEN_IN_PATH = re.compile(r'[\x00-\x1f\x7f\\:*?"<>|]')


def chunker() -> FastCDC:
    """A FastCDC cutter with the store's parameters (not safe to share across threads)."""
    return FastCDC(AVG_CHUNK_SIZE, min_size=MIN_CHUNK_SIZE, max_size=MAX_CHUNK_SIZE)


def cut(data: bytes | bytearray | memoryview) -> Iterator[tuple[int, memoryview]]:
    """(offset, bytes) of each chunk of `data`, in order; an empty input has no chunks."""
    if len(data) <= MIN_CHUNK_SIZE:  # FastCDC's own answer for it, without building a cutter
        if len(data):
            yield 0, memoryview(data)
        return
    for chunk in chunker().cut_buf(data):
        yield chunk.offset, chunk.data


def chunk_id(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


# Incompressible chunks (packed assets, media, encrypted data) are not run through the compressor: zstd
# would store them as raw blocks (RFC 8878 §3.1.1.2) after spending a pass over them, so the object is
# that frame, written directly (byte for byte what zstd writes for such a chunk of up to 2 MiB). Whether
# zstd can shrink a chunk is asked of probes (the borg `auto` / ZFS early-abort idea): level 1 over a
# few small samples spread across it (any that shrinks: compress; entropy alone, as in text, counts),
# then a negative level over the whole chunk, which finds repeats farther apart than a sample. A chunk is
# incompressible when nothing saves 1/64 of its size, zstd's own bar for keeping a compressed block.
# Misjudging costs compression ratio, never data: the raw frame decodes to the exact bytes. A chunk
# smaller than PROBE_MIN_SIZE is simply compressed (probing it would cost about as much).
PROBE_MIN_SIZE = 64 * 1024
PROBE_SAMPLES = 8
PROBE_SAMPLE_SIZE = 4 * 1024
SAMPLE_PROBE_LEVEL = 1
WHOLE_PROBE_LEVEL = -20
RAW_BLOCK_SIZE = 128 * 1024  # the largest block a frame may hold (Block_Maximum_Size)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# Idle compressors by level, shared by every thread: a compressor's context (its window and tables, a few
# MiB) is reused however many threads and builds come and go, rather than allocated and first touched
# again by each new thread. A compressor serves one call at a time.
_idle: dict[int, queue.SimpleQueue[zstandard.ZstdCompressor]] = {
    level: queue.SimpleQueue() for level in (ZSTD_LEVEL, SAMPLE_PROBE_LEVEL, WHOLE_PROBE_LEVEL)
}


def _compress(level: int, data: bytes | memoryview) -> bytes:
    idle = _idle[level]
    try:
        compressor = idle.get_nowait()
    except queue.Empty:
        compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
    try:
        return compressor.compress(data)
    finally:
        idle.put(compressor)


def _shrinks(level: int, data: bytes | memoryview) -> bool:
    return len(_compress(level, data)) <= len(data) - (len(data) >> 6)


def incompressible(data: bytes | memoryview) -> bool:
    """True when zstd would store `data` as raw blocks anyway (judged by the probes, see above)."""
    size = len(data)
    if size < PROBE_MIN_SIZE:
        return False
    step = (size - PROBE_SAMPLE_SIZE) // (PROBE_SAMPLES - 1)
    for at in range(0, PROBE_SAMPLES * step, step):
        if _shrinks(SAMPLE_PROBE_LEVEL, data[at : at + PROBE_SAMPLE_SIZE]):
            return False
    return not _shrinks(WHOLE_PROBE_LEVEL, data)


def _raw_frame_header(size: int) -> bytes:
    """Magic, then a descriptor with Single_Segment set (the window is the content: no window byte) and
    the Frame_Content_Size in the smallest field that holds it; no checksum, no dictionary."""
    if size < 256:
        return _ZSTD_MAGIC + bytes((0x20, size))
    if size < 256 + 65536:
        return _ZSTD_MAGIC + b"\x60" + (size - 256).to_bytes(2, "little")
    if size < 1 << 32:
        return _ZSTD_MAGIC + b"\xa0" + size.to_bytes(4, "little")
    return _ZSTD_MAGIC + b"\xe0" + size.to_bytes(8, "little")


def raw_frame_parts(data: bytes | memoryview) -> list[bytes | memoryview]:
    """The pieces of the zstd frame that stores `data` uncompressed, in order, without copying `data`:
    the header, then each raw block's 3-byte header (Last_Block, Block_Type 0 = raw, Block_Size) and a
    view of its at most RAW_BLOCK_SIZE bytes. Hash them in turn, or join them for the object itself."""
    view, size = memoryview(data), len(data)
    parts: list[bytes | memoryview] = [_raw_frame_header(size)]
    for at in range(0, size, RAW_BLOCK_SIZE):
        block = view[at : at + RAW_BLOCK_SIZE]
        last = at + RAW_BLOCK_SIZE >= size
        parts += ((len(block) << 3 | last).to_bytes(3, "little"), block)
    if not size:
        parts.append(b"\x01\x00\x00")  # one empty last block
    return parts


def raw_frame(data: bytes | memoryview) -> bytes:
    return b"".join(raw_frame_parts(data))


def compress(data: bytes | memoryview) -> bytes:
    """The stored object of a chunk: a zstd frame with the content size recorded (so the verifier can
    refuse an oversized frame early), level ZSTD_LEVEL, or raw blocks when the chunk is incompressible."""
    return raw_frame(data) if incompressible(data) else compressed_frame(data)


def compressed_frame(data: bytes | memoryview) -> bytes:
    """`data` through the compressor (level ZSTD_LEVEL), whatever it saves: `compress` of a chunk that is
    not `incompressible`."""
    return _compress(ZSTD_LEVEL, data)


class ChunkContentError(ValueError):
    """A stored object is not a valid compressed form of the chunk it claims to be."""


def decompress_chunk(blob: bytes, expected_size: int) -> bytes:
    """The chunk's bytes; refuses a frame that isn't zstd or whose content is not exactly
    `expected_size` bytes (never inflates more than that)."""
    try:
        data = zstandard.ZstdDecompressor().decompress(blob, max_output_size=expected_size)
    except zstandard.ZstdError as exc:
        raise ChunkContentError("not a zstd frame of the declared size") from exc
    if len(data) != expected_size:
        raise ChunkContentError("decompressed size differs from the declared size")
    return data


def object_key(chunk: str, compressed_sha256: str) -> str:
    """S3 key of one compressed form of a chunk. The compressed hash is part of the key, so whoever can
    write that key (a presigned PUT bound to that SHA-256) can only write those exact bytes: a verified
    object can never be replaced by different content."""
    return f"chunks/{chunk[:2]}/{chunk}/{compressed_sha256}"


def path_problem(path: str) -> str | None:
    """Why `path` can't name a file of a version (relative, `/`-separated, no traversal), or None."""
    if not path:
        return "is required"
    if len(path) > MAX_PATH_LEN:
        return f"must be at most {MAX_PATH_LEN} characters"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "must be relative"
    if _FORBIDDEN_IN_PATH.search(path):
        return 'must not contain control characters or any of \\ : * ? " < > |'
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            return "must not contain empty, '.' or '..' segments"
        if len(segment) > MAX_PATH_SEGMENT_LEN:
            return f"segments must be at most {MAX_PATH_SEGMENT_LEN} characters"
    return None


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk occurrence in a file, as a publisher declares it."""

    chunk_id: str
    offset: int
    size: int
    compressed_size: int
    compressed_sha256: str


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    chunks: tuple[ChunkRef, ...]


def file_list_problems(files: Sequence[FileEntry]) -> list[tuple[str, str]]:
    """(field, description) for every rule a published file list breaks: paths, duplicates, hashes, chunk
    lists that don't cover their file exactly, and chunks declared with different sizes in two places."""
    problems: list[tuple[str, str]] = []
    seen_paths: set[str] = set()
    declared: dict[str, tuple[int, int, str]] = {}
    for i, entry in enumerate(files):
        field = f"files[{i}]"
        if (problem := path_problem(entry.path)) is not None:
            problems.append((f"{field}.path", problem))
        folded = entry.path.casefold()  # `a.txt` and `A.TXT` collide on case-insensitive file systems
        if folded in seen_paths:
            problems.append((f"{field}.path", "is a duplicate within the version"))
        seen_paths.add(folded)
        if entry.size < 0:
            problems.append((f"{field}.size_bytes", "must not be negative"))
        if not SHA256_HEX.match(entry.sha256):
            problems.append((f"{field}.sha256", "must be 64 lowercase hex characters"))
        problems.extend(_chunk_list_problems(field, entry, declared))
    return problems


def _chunk_list_problems(
    field: str, entry: FileEntry, declared: dict[str, tuple[int, int, str]]
) -> Iterator[tuple[str, str]]:
    expected_offset = 0
    for j, ref in enumerate(entry.chunks):
        where = f"{field}.chunks[{j}]"
        if not SHA256_HEX.match(ref.chunk_id):
            yield f"{where}.chunk_id", "must be 64 lowercase hex characters"
        if not SHA256_HEX.match(ref.compressed_sha256):
            yield f"{where}.compressed_sha256", "must be 64 lowercase hex characters"
        if ref.offset != expected_offset:
            yield f"{where}.offset", f"must be {expected_offset} (chunks must cover the file in order)"
        if not 1 <= ref.size <= MAX_CHUNK_SIZE:
            yield f"{where}.size_bytes", f"must be 1-{MAX_CHUNK_SIZE}"
        if ref.compressed_size < 1:
            yield f"{where}.compressed_size_bytes", "must be positive"
        shape = (ref.size, ref.compressed_size, ref.compressed_sha256)
        if declared.setdefault(ref.chunk_id, shape)[0] != ref.size:
            yield f"{where}.size_bytes", "differs from another occurrence of the same chunk"
        expected_offset = ref.offset + ref.size
    if expected_offset != entry.size:
        yield f"{field}.chunks", f"cover {expected_offset} bytes but the file has {entry.size}"
