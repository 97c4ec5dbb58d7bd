"""The chunk store's pure rules: content-defined cut points, chunk naming, compression bounds, path and
file-list rules."""

from __future__ import annotations

import hashlib
import random

import pytest

from content_store.chunking import (
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    ChunkContentError,
    ChunkRef,
    FileEntry,
    chunk_id,
    compress,
    cut,
    decompress_chunk,
    file_list_problems,
    path_problem,
)


def _ids(data: bytes) -> list[str]:
    return [chunk_id(piece) for _, piece in cut(data)]


def test_chunks_cover_the_input_in_order_within_the_size_bounds():
    data = random.Random(1).randbytes(12 * 1024 * 1024)
    pieces = list(cut(data))
    assert b"".join(bytes(p) for _, p in pieces) == data
    assert [o for o, _ in pieces] == [sum(len(p) for _, p in pieces[:i]) for i in range(len(pieces))]
    assert all(MIN_CHUNK_SIZE <= len(p) <= MAX_CHUNK_SIZE for _, p in pieces[:-1])


def test_an_insertion_in_the_middle_changes_at_most_two_chunks():
    rng = random.Random(2)
    data = rng.randbytes(16 * 1024 * 1024)
    edited = data[: 7 * 1024 * 1024] + rng.randbytes(4096) + data[7 * 1024 * 1024 :]
    before, after = _ids(data), _ids(edited)
    assert len(set(after) - set(before)) <= 2


def test_an_empty_input_has_no_chunks():
    assert list(cut(b"")) == []


def test_decompression_refuses_frames_of_another_size_or_not_zstd():
    content = b"abc" * 1000
    assert decompress_chunk(compress(content), len(content)) == content
    with pytest.raises(ChunkContentError):
        decompress_chunk(compress(content), len(content) - 1)
    with pytest.raises(ChunkContentError):
        decompress_chunk(compress(content + b"x"), len(content))
    with pytest.raises(ChunkContentError):
        decompress_chunk(b"not zstd at all", 10)


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("bin/game.exe", True),
        ("a b/c-d_e.f", True),
        ("", False),
        ("/abs", False),
        ("C:/win", False),
        ("../up", False),
        ("a/../b", False),
        ("a/./b", False),
        ("a//b", False),
        ("trailing/", False),
        ("back\\slash", False),
        ("nul\x00", False),
        ("x" * 256, False),
    ],
)
def test_paths_must_be_relative_without_traversal(path, ok):
    assert (path_problem(path) is None) is ok


def _entry(path: str, content: bytes, *, size: int | None = None, offset: int = 0) -> FileEntry:
    blob = compress(content)
    ref = ChunkRef(chunk_id(content), offset, len(content), len(blob), hashlib.sha256(blob).hexdigest())
    return FileEntry(path, len(content) if size is None else size, chunk_id(content), (ref,))


def test_a_valid_file_list_has_no_problems():
    assert file_list_problems([_entry("a", b"1"), _entry("b", b"1"), FileEntry("e", 0, "0" * 64, ())]) == []


def test_file_list_problems_name_each_field():
    problems = file_list_problems(
        [
            _entry("a", b"123", size=4),  # chunks cover 3 of 4 bytes
            _entry("A", b"x"),  # same path as `a` on a case-insensitive file system
            _entry("c", b"y", offset=1),  # a gap before the first chunk
        ]
    )
    assert [field for field, _ in problems] == [
        "files[0].chunks",
        "files[1].path",
        "files[2].chunks[0].offset",
        "files[2].chunks",
    ]


def test_one_chunk_id_declared_with_two_sizes_is_refused():
    one = _entry("a", b"12")
    ref = one.chunks[0]
    other = FileEntry(
        "b", 3, "0" * 64, (ChunkRef(ref.chunk_id, 0, 3, ref.compressed_size, ref.compressed_sha256),)
    )
    assert [field for field, _ in file_list_problems([one, other])] == ["files[1].chunks[0].size_bytes"]
