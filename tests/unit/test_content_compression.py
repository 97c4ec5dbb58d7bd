"""How a chunk is stored: a zstd frame, compressed, or raw blocks written directly when the probes find
nothing zstd could shrink. Raw frames decode with zstandard (one-shot and streaming) to exactly their
bytes at every size, equal what libzstd itself writes for incompressible bytes, and the probes never
take a chunk with something compressible in it (a text tail, repeats far apart) for incompressible."""

from __future__ import annotations

import random

import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from content_store.chunking import (
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    PROBE_MIN_SIZE,
    RAW_BLOCK_SIZE,
    ZSTD_LEVEL,
    chunker,
    compress,
    cut,
    decompress_chunk,
    incompressible,
    raw_frame,
    raw_frame_parts,
)

KiB = 1024
# Where the frame's layout changes: the content-size field's widths (1, 2, 4 bytes) and block edges.
EDGES = [0, 1, 255, 256, 257, 65791, 65792, RAW_BLOCK_SIZE - 1, RAW_BLOCK_SIZE, RAW_BLOCK_SIZE + 1]
SIZES = st.sampled_from([*EDGES, 2 * RAW_BLOCK_SIZE, 3 * RAW_BLOCK_SIZE + 7, MAX_CHUNK_SIZE]) | st.integers(
    0, MAX_CHUNK_SIZE
)


def _random(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _text(size: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 6)).hex().encode() for _ in range(2000)]
    return b" ".join(rng.choices(words, k=size // 3 + 1))[:size]


@settings(max_examples=40, deadline=None)
@given(size=SIZES, seed=st.integers(0, 2**32))
def test_a_raw_frame_decodes_to_exactly_its_bytes_at_every_size(size, seed):
    data = _random(size, seed)
    frame = raw_frame(data)
    blocks = max(1, -(-size // RAW_BLOCK_SIZE))
    header = 6 if size < 256 else 7 if size < 65792 else 9
    assert len(frame) == header + 3 * blocks + size
    assert b"".join(bytes(p) for p in raw_frame_parts(data)) == frame
    assert decompress_chunk(frame, size) == data  # what the verifier and the launcher run
    streamed = zstandard.ZstdDecompressor().decompressobj()
    assert streamed.decompress(frame) == data
    params = zstandard.get_frame_parameters(frame)
    assert (params.content_size, params.has_checksum, params.dict_id) == (size, False, 0)


def test_a_raw_frame_is_what_libzstd_writes_for_incompressible_bytes():
    """Up to its single-segment limit (2 MiB at level 3) libzstd frames random bytes exactly so."""
    reference = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    for size in (1, 300, 70_000, RAW_BLOCK_SIZE, RAW_BLOCK_SIZE + 1, 1024 * KiB, 2048 * KiB):
        data = _random(size, size)
        assert raw_frame(data) == reference.compress(data), size


def test_incompressible_chunks_are_raw_frames_and_compressible_ones_compress():
    noise = _random(MAX_CHUNK_SIZE, 1)
    assert incompressible(noise) and compress(noise) == raw_frame(noise)
    text = _text(1024 * KiB)
    assert not incompressible(text) and len(compress(text)) < len(text) // 2
    assert decompress_chunk(compress(text), len(text)) == text


def test_a_chunk_with_anything_compressible_in_it_is_compressed():
    """Random head + text tail, text in the middle between the samples, and incompressible bytes that
    repeat farther apart than a sample: each must still shrink, and decode to itself."""
    head = _random(900 * KiB, 2)
    block = _random(300 * KiB, 3)
    chunks = {
        "text tail": head + _text(124 * KiB),
        "text between the samples": _random(400 * KiB, 4) + _text(200 * KiB) + _random(400 * KiB, 5),
        "repeats far apart": block + _random(100 * KiB, 6) + block,
    }
    for name, chunk in chunks.items():
        blob = compress(chunk)
        assert not incompressible(chunk), name
        assert len(blob) < len(chunk) - len(chunk) // 16, name
        assert decompress_chunk(blob, len(chunk)) == chunk, name


def test_small_chunks_are_compressed_without_probing():
    small = _random(PROBE_MIN_SIZE - 1, 7)
    assert not incompressible(small)
    reference = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    assert compress(small) == reference.compress(small)


def test_inputs_of_at_most_the_minimum_chunk_size_are_one_chunk_as_fastcdc_cuts_them():
    for size in (1, MIN_CHUNK_SIZE - 1, MIN_CHUNK_SIZE, MIN_CHUNK_SIZE + 1, 3 * MIN_CHUNK_SIZE):
        data = _random(size, size)
        expected = [(c.offset, bytes(c.data)) for c in chunker().cut_buf(data)]
        assert [(offset, bytes(piece)) for offset, piece in cut(data)] == expected, size
