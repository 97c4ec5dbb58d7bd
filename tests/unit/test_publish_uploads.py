"""The publisher's chunk PUTs (client.sdk.publishing.upload_missing) against a local HTTP server standing in
for the store: every object arrives byte for byte with the headers its link requires, a 5xx or a dropped
connection is retried on a fresh connection, a 4xx is final and names the chunk."""

from __future__ import annotations

import http.server
import random
import threading

import pytest

from client.sdk import publishing
from client.sdk.publishing import UploadError, upload_missing
from content_store.builds import scan
from download.v1 import download_service_pb2 as pb


class _Store(http.server.ThreadingHTTPServer):
    """Answers each PUT with the next scripted status (then 200), keeping what arrived."""

    def __init__(self, script: list[int | str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script, self.received, self.lock = list(script), [], threading.Lock()

    def next_answer(self) -> int | str:
        with self.lock:
            return self.script.pop(0) if self.script else 200


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a store answers

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = self.server.next_answer()
        if answer == "drop":  # the connection dies before any answer
            self.close_connection = True
            return
        with self.server.lock:
            self.server.received.append((self.path, dict(self.headers), body, answer))
        self.send_response(answer)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def build(tmp_path):
    (tmp_path / "text.txt").write_bytes(b"level script line\n" * 200_000)  # compressible, several chunks
    (tmp_path / "noise.pak").write_bytes(random.Random(5).randbytes(3 * 2**20))  # raw frames, built to upload
    return scan(tmp_path, workers=2)


def _targets(build, port: int) -> list[pb.ChunkUploadTarget]:
    refs = {ref.chunk_id: ref for entry in build.files for ref in entry.chunks}
    return [
        pb.ChunkUploadTarget(
            chunk_id=chunk,
            url=f"http://127.0.0.1:{port}/library/chunks/{chunk}?X-Amz-Signature=abc",
            headers={
                "x-amz-checksum-sha256": ref.compressed_sha256,
                "Content-Length": str(ref.compressed_size),
            },
        )
        for chunk, ref in refs.items()
    ]


def _serve(store: _Store):
    thread = threading.Thread(target=store.serve_forever, daemon=True)
    thread.start()
    return thread


async def test_every_object_arrives_whole_and_a_5xx_or_a_dropped_connection_is_retried(build, monkeypatch):
    monkeypatch.setattr(publishing.time, "sleep", lambda _seconds: None)  # no backoff waits in a unit test
    store = _Store([503, "drop", 500])
    _serve(store)
    targets = _targets(build, store.server_address[1])
    uploaded: list[int] = []
    try:
        sent = await upload_missing(build, targets, concurrency=3, on_uploaded=uploaded.append)
    finally:
        store.shutdown()
    accepted = {path: (headers, body) for path, headers, body, status in store.received if status == 200}
    assert len(accepted) == len(targets) and len(store.received) == len(targets) + 2  # 503 and 500 retried
    for target in targets:
        headers, body = accepted[f"/library/chunks/{target.chunk_id}?X-Amz-Signature=abc"]
        expected, _ = build.compressed(target.chunk_id)
        assert body == expected
        assert headers["x-amz-checksum-sha256"] == target.headers["x-amz-checksum-sha256"]
    assert sent == sum(uploaded) == sum(len(body) for _, body in accepted.values())


async def test_a_refused_chunk_fails_the_upload_at_once_naming_it(build, monkeypatch):
    monkeypatch.setattr(publishing.time, "sleep", lambda _seconds: None)
    store = _Store([403])
    _serve(store)
    targets = _targets(build, store.server_address[1])
    try:
        with pytest.raises(UploadError, match=r"the store refused chunk [0-9a-f]{12}… \(403\)"):
            await upload_missing(build, targets, concurrency=1)
    finally:
        store.shutdown()
    refused = [path for path, _, _, status in store.received if status == 403]
    assert len(refused) == 1  # not retried
