"""Pure rules of verification (what is damaged, which chunks to re-fetch) and manifest paging."""

from __future__ import annotations

import uuid

from server.downloads import manifests, verification
from server.downloads.catalog import InstalledChunk, InstalledFile
from server.downloads.content_repository import ChunkRow, FileRow

FILE = FileRow(uuid.uuid4(), "bin/game.bin", 300, "a" * 64)


def _chunks() -> list[ChunkRow]:
    return [
        ChunkRow(FILE.file_id, i, f"{i}" * 64, i * 100, 100, 60, "c" * 64)  # ids "000…", "111…", "222…"
        for i in range(3)
    ]


def test_a_file_is_missing_mis_sized_corrupt_or_intact():
    assert verification.problem_of(FILE, None) == verification.MISSING
    assert (
        verification.problem_of(FILE, InstalledFile(FILE.path, 299, "a" * 64)) == verification.SIZE_MISMATCH
    )
    assert (
        verification.problem_of(FILE, InstalledFile(FILE.path, 300, "b" * 64)) == verification.HASH_MISMATCH
    )
    assert verification.problem_of(FILE, InstalledFile(FILE.path, 300, "a" * 64)) is None


def test_without_range_hashes_every_chunk_of_a_damaged_file_is_refetched():
    assert verification.chunks_to_refetch(_chunks(), None) == _chunks()
    assert verification.chunks_to_refetch(_chunks(), InstalledFile(FILE.path, 300, "b" * 64)) == _chunks()


def test_ranges_that_match_offset_size_and_hash_vouch_for_their_chunks():
    reported = InstalledFile(
        FILE.path,
        300,
        "b" * 64,
        (
            InstalledChunk(0, 100, "0" * 64),  # intact
            InstalledChunk(100, 100, "f" * 64),  # corrupt
            InstalledChunk(201, 99, "2" * 64),  # right hash, wrong place: not a match
        ),
    )
    assert [c.position for c in verification.chunks_to_refetch(_chunks(), reported)] == [1, 2]


def _row(chunks: int) -> FileRow:
    return FileRow(uuid.uuid4(), "f", 0, "0" * 64, chunk_count=chunks)


def test_a_manifest_page_stops_at_its_chunk_budget_but_always_holds_a_file():
    budget = manifests.MAX_CHUNKS_PER_PAGE
    assert len(manifests._within_budget([_row(budget // 2)] * 3, 50)) == 2
    assert len(manifests._within_budget([_row(budget * 3), _row(1)], 50)) == 1
    assert len(manifests._within_budget([_row(1)] * 10, 4)) == 4
