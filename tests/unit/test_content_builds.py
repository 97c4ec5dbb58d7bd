"""A directory prepared for publishing (content_store.builds.scan): every file's hash and every chunk's
compressed object are exactly what the contract declares, when a chunk repeats (compressed once, the
repeats carry the same object), when a file is a single chunk (its hash is that chunk's id), when small
files are prepared in batches and when a chunk is incompressible (a raw frame, built again to upload)."""

from __future__ import annotations

import hashlib
import random

from content_store.builds import BATCH_FILES, scan
from content_store.chunking import compress, cut, decompress_chunk, incompressible


def test_every_hash_and_object_of_a_build_is_what_the_contract_declares(tmp_path):
    big = random.Random(3).randbytes(5 * 1024 * 1024)  # several chunks
    files = {"a/big.pak": big, "b/copy.pak": big, "small.txt": b"hello " * 1000, "empty.dat": b""}
    for path, content in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(content)

    build = scan(tmp_path, workers=2)

    entries = {entry.path: entry for entry in build.files}
    assert sorted(entries) == sorted(files)
    for path, content in files.items():
        entry = entries[path]
        assert entry.size == len(content) and entry.sha256 == hashlib.sha256(content).hexdigest()
        pieces = [bytes(piece) for _, piece in cut(content)]
        assert [ref.chunk_id for ref in entry.chunks] == [hashlib.sha256(p).hexdigest() for p in pieces]
        for ref, piece in zip(entry.chunks, pieces, strict=True):
            blob, blob_hash = build.compressed(ref.chunk_id)
            assert (ref.compressed_size, ref.compressed_sha256) == (len(blob), blob_hash)
            assert blob == compress(piece) and blob_hash == hashlib.sha256(blob).hexdigest()
            assert decompress_chunk(blob, ref.size) == piece
    assert len(entries["a/big.pak"].chunks) > 1 and len(entries["small.txt"].chunks) == 1
    assert entries["b/copy.pak"].chunks == entries["a/big.pak"].chunks
    assert entries["empty.dat"].chunks == ()


def test_small_files_in_batches_and_raw_chunks_built_again_for_upload(tmp_path):
    """More small files than a batch holds (repeats among them), a large compressible file and a large
    incompressible one: every declared object is what `compress` makes of its chunk; an incompressible
    chunk's raw frame is not kept from the scan but built again, byte for byte, for its upload."""
    rng = random.Random(4)
    text = b"".join(b"line %d of the level script\n" % i for i in range(200_000))
    noise = rng.randbytes(3 * 1024 * 1024)
    files = {f"small/{i:03d}.dat": rng.randbytes(rng.randint(1, 300_000)) for i in range(BATCH_FILES + 9)}
    files |= {"small/repeat.dat": files["small/000.dat"], "script.txt": text, "assets.pak": noise}
    for path, content in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(content)

    build = scan(tmp_path, workers=3)

    entries = {entry.path: entry for entry in build.files}
    assert [e.path for e in build.files] == sorted(files)
    for path, content in files.items():
        entry = entries[path]
        assert entry.size == len(content) and entry.sha256 == hashlib.sha256(content).hexdigest()
        for ref, (_, piece) in zip(entry.chunks, cut(content), strict=True):
            blob, blob_hash = build.compressed(ref.chunk_id)
            assert blob == compress(piece) and blob_hash == hashlib.sha256(blob).hexdigest()
            assert (ref.compressed_size, ref.compressed_sha256) == (len(blob), blob_hash)
            assert (ref.chunk_id in build._cache) == (not incompressible(piece))
    assert all(ref.compressed_size > ref.size for ref in entries["assets.pak"].chunks)  # raw frames
    assert sum(ref.compressed_size for ref in entries["script.txt"].chunks) < len(text) // 4
    assert entries["small/repeat.dat"].chunks == entries["small/000.dat"].chunks
