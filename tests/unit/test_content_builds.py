"""A directory prepared for publishing (content_store.builds.scan): every file's hash and every chunk's
compressed object are exactly what the contract declares, when a chunk repeats (compressed once, the
repeats carry the same object) and when a file is a single chunk (its hash is that chunk's id)."""

from __future__ import annotations

import hashlib
import random

from content_store.builds import scan
from content_store.chunking import compress, cut, decompress_chunk


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
