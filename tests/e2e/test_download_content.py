"""Published content end to end, as a build pipeline and a launcher see it: the `publish` CLI against
Envoy's gRPC edge; downloads, manifests, update checks and verification over REST through Envoy; every
chunk fetched through its signed link with a plain HTTP client, decompressed, verified and assembled; the
events on Kafka as CloudEvents."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from client.sdk.connection import Connection
from client.sdk.publishing import begin_request, upload_missing
from content_store.builds import scan
from content_store.chunking import cut, decompress_chunk, object_key
from download.v1 import download_service_pb2_grpc
from scripts.devtokens import mint
from server.core.events.cloudevents import DOWNLOAD_EVENTS_TOPIC
from server.core.s3_presign import Presigner
from tests.support.kafka import TopicReader, about, assert_cloud_event
from tests.support.ownership import grant
from tests.support.processes import ROOT
from tests.support.publishing import write_tree
from tests.support.rest import RestClient, error_reason

DL = "/api/v1/download-client"
ENVOY_GRPC = f"127.0.0.1:{os.environ.get('ENVOY_PORT', '8080')}"
MiB = 1024 * 1024
UPDATE_AVAILABLE = "com.platform.download.update.available.v1"
VERIFICATION_COMPLETED = "com.platform.download.file.verification.completed.v1"


RUN = uuid.uuid4().hex  # content differs per run: the chunk store keeps what earlier runs stored


def seeded(seed: int, size: int) -> bytes:
    return random.Random(f"{RUN}-{seed}").randbytes(size)


def run_publish(product: uuid.UUID, version: str, directory: Path, *extra: str) -> dict:
    """`python -m client publish ... --json` as a build pipeline runs it; returns its JSON report."""
    env = {
        **os.environ,
        "LIBRARY_TOKEN": mint("service:ci", roles=("service",)),
        "LIBRARY_TARGET": ENVOY_GRPC,
    }
    command = ["publish", "--product", str(product), "--version", version, *extra, "--json", str(directory)]
    done = subprocess.run(
        [sys.executable, "-m", "client", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@dataclass
class Published:
    product: uuid.UUID
    v1_files: dict[str, bytes]
    v2_files: dict[str, bytes]
    v1: dict
    v2: dict
    edits: int
    v1_directory: Path


V1_NOTES = "First release."
V2_NOTES = "Fixes a crash in the big file."


def _edited(big: bytes) -> tuple[bytes, int]:
    """Inserts 3 KiB at 10 MiB, deletes 2 KiB at 30 MiB and changes 4 KiB at 50 MiB: three edits."""
    rng = random.Random(99)
    edited = big[: 10 * MiB] + rng.randbytes(3 * 1024) + big[10 * MiB : 30 * MiB] + big[30 * MiB + 2048 :]
    at = 50 * MiB
    edited = edited[:at] + rng.randbytes(4096) + edited[at + 4096 :]
    return edited, 3


@pytest.fixture(scope="module")
def published(tmp_path_factory, grpc_target) -> Published:
    """v1 of a multi-file product (duplicate files, an empty one, one of 70 MiB) and v2 with a few KiB
    inserted, deleted and changed inside the large file, both published with the CLI."""
    product = uuid.uuid4()
    shared = seeded(11, 2 * MiB + 12345)
    big = seeded(12, 70 * MiB)
    v1_files = {
        "bin/big.dat": big,
        "data/a.pak": shared,
        "data/copy-of-a.pak": shared,
        "docs/readme.txt": f"Welcome to the game ({RUN}).\n".encode() * 200,
        "empty.cfg": b"",
    }
    root = tmp_path_factory.mktemp("builds")
    notes = write_tree(root / "notes", {"v1.txt": V1_NOTES.encode(), "v2.txt": V2_NOTES.encode()})
    v1 = run_publish(product, "1.0.0", write_tree(root / "v1", v1_files), "--notes", str(notes / "v1.txt"))
    edited, edits = _edited(big)
    v2_files = {**v1_files, "bin/big.dat": edited}
    v2 = run_publish(product, "1.1.0", write_tree(root / "v2", v2_files), "--notes", str(notes / "v2.txt"))
    return Published(product, v1_files, v2_files, v1, v2, edits, root / "v1")


def v1_build(published: Published):
    """The v1 build as the publisher prepared it (its chunk ids and compressed objects)."""
    return scan(published.v1_directory)


async def _start(me: RestClient, product: uuid.UUID, **extra) -> str:
    status, body = await me.call(
        "POST", f"{DL}/downloads", json={"productId": str(product), "installationPath": "/games/x", **extra}
    )
    assert status == 200, body
    return body["download"]["downloadId"]


async def _manifest(me: RestClient, download_id: str, page_size: int = 2) -> list[dict]:
    files, token = [], ""
    while True:
        params = {"pageSize": str(page_size)} | ({"pageToken": token} if token else {})
        status, page = await me.call("GET", f"{DL}/downloads/{download_id}/manifest", params=params)
        assert status == 200, page
        files.extend(page["files"])
        token = page.get("nextPageToken", "")
        if not token:
            assert len(files) == page["totalSize"]
            return files


async def _fetch(http: httpx.AsyncClient, chunk: dict) -> bytes:
    """A chunk through its signed link: decompressed and checked against its id."""
    reply = await http.get(chunk["url"])
    assert reply.status_code == 200
    assert len(reply.content) == int(chunk["compressedSizeBytes"])
    content = decompress_chunk(reply.content, int(chunk["sizeBytes"]))
    assert hashlib.sha256(content).hexdigest() == chunk["chunkHash"]
    return content


def _chunks_of(files: dict[str, bytes]) -> dict[str, bytes]:
    """Chunk id → bytes of files a client has, cut with the store's parameters (as the launcher does)."""
    return {hashlib.sha256(piece).hexdigest(): bytes(piece) for c in files.values() for _, piece in cut(c)}


async def _install(
    manifest: list[dict], installed: dict[str, bytes] | None = None
) -> tuple[dict[str, bytes], set[str]]:
    """Assembles every file from its chunks: fetched when download_required, else copied from the
    installed files. Returns the files and the ids of the chunks fetched."""
    held = _chunks_of(installed or {})
    fetched: dict[str, bytes] = {}
    async with httpx.AsyncClient(timeout=60) as http:
        for entry in manifest:
            for chunk in entry.get("chunks", []):
                if chunk.get("downloadRequired", False) and chunk["chunkHash"] not in fetched:
                    fetched[chunk["chunkHash"]] = await _fetch(http, chunk)
    files = {
        entry["path"]: b"".join(
            fetched.get(c["chunkHash"]) or held[c["chunkHash"]] for c in entry.get("chunks", [])
        )
        for entry in manifest
    }
    return files, set(fetched)


def _compressed_sizes(manifest: list[dict]) -> dict[str, int]:
    return {c["chunkHash"]: int(c["compressedSizeBytes"]) for e in manifest for c in e.get("chunks", [])}


async def test_a_published_build_installs_byte_for_byte_from_signed_links(http, sessions, published):
    me = RestClient(http, uuid.uuid4())
    await grant(sessions, me.user, published.product)
    assert published.v1["files"] == 5 and published.v1["uploadedChunks"] == published.v1["distinctChunks"]
    # Within v1: the duplicate file is stored once.
    assert published.v1["downloadSizeBytes"] <= published.v1["bytes"] - len(published.v1_files["data/a.pak"])

    download = await _start(me, published.product, versionId=published.v1["versionId"])
    manifest = await _manifest(me, download)
    assert [f["path"] for f in manifest] == sorted(published.v1_files)
    files, fetched = await _install(manifest)
    assert files == published.v1_files
    assert sum(_compressed_sizes(manifest)[c] for c in fetched) == published.v1["downloadSizeBytes"]


async def test_an_update_downloads_only_the_chunks_the_edits_touched(http, sessions, published):
    me = RestClient(http, uuid.uuid4())
    await grant(sessions, me.user, published.product)
    v1, v2 = published.v1["versionId"], published.v2["versionId"]
    assert published.v2["uploadedChunks"] <= 2 * (published.edits + 1)  # the CLI sent only new chunks

    status, checked = await me.call(
        "POST",
        f"{DL}/updates/check",
        json={"installedProducts": [{"productId": str(published.product), "installedVersionId": v1}]},
    )
    assert status == 200, checked
    [update] = checked["updates"]
    assert update["updateAvailable"] is True and update["latestVersionId"] == v2
    assert update["latestVersionName"] == "1.1.0" and update["releaseNotes"] == V2_NOTES
    assert update["branch"] == "public"
    to_download = int(update["bytesToDownload"])
    assert 0 < to_download <= (published.edits + 1) * 2 * MiB
    assert int(update["bytesToWrite"]) == len(published.v2_files["bin/big.dat"])

    download = await _start(me, published.product, versionId=v2, installedVersionId=v1)
    manifest = await _manifest(me, download)
    assert [f["path"] for f in manifest if f.get("writeRequired", False)] == ["bin/big.dat"]
    files, fetched = await _install(manifest, installed=published.v1_files)
    assert files == published.v2_files
    assert sum(_compressed_sizes(manifest)[c] for c in fetched) == to_download


async def test_update_available_is_announced_once_per_user_product_and_version(
    http, sessions, settings, published
):
    me = RestClient(http, uuid.uuid4())
    await grant(sessions, me.user, published.product)
    body = {
        "installedProducts": [
            {"productId": str(published.product), "installedVersionId": published.v1["versionId"]}
        ]
    }
    async with TopicReader(settings.kafka_bootstrap_servers, DOWNLOAD_EVENTS_TOPIC) as reader:
        for _ in range(3):
            status, _ = await me.call("POST", f"{DL}/updates/check", json=body)
            assert status == 200
        # A later event of the same user is the sentinel: events of one user arrive in commit order.
        status, _ = await me.call(
            "POST",
            f"{DL}/verifications",
            json={"productId": str(published.product), "versionId": published.v2["versionId"], "files": []},
        )
        assert status == 200
        await reader.wait_for(about(me.user, VERIFICATION_COMPLETED))
    [event] = reader.matching(about(me.user, UPDATE_AVAILABLE))
    assert_cloud_event(event)
    assert event["data"] == event["data"] | {
        "userId": str(me.user),
        "productId": str(published.product),
        "currentVersionId": published.v1["versionId"],
        "latestVersionId": published.v2["versionId"],
        "latestVersionName": "1.1.0",
        "releaseNotes": V2_NOTES,
    }
    assert 0 < event["data"]["updateSizeBytes"] <= (published.edits + 1) * 2 * MiB


def _reported(files: dict[str, bytes], manifest: list[dict]) -> list[dict]:
    """What a launcher reports: size and SHA-256 per file, and hashes of the manifest's chunk ranges for
    files whose hash does not match."""
    expected = {f["path"]: f for f in manifest}
    reported = []
    for path, content in files.items():
        entry = {"path": path, "sizeBytes": str(len(content)), "sha256": hashlib.sha256(content).hexdigest()}
        if entry["sha256"] != expected[path]["sha256"]:
            entry["chunks"] = [
                {
                    "offset": c["offset"],
                    "sizeBytes": c["sizeBytes"],
                    "sha256": hashlib.sha256(
                        content[int(c["offset"]) : int(c["offset"]) + int(c["sizeBytes"])]
                    ).hexdigest(),
                }
                for c in expected[path].get("chunks", [])
            ]
        reported.append(entry)
    return reported


async def test_a_corrupted_installation_is_repaired_from_exactly_its_bad_chunks(
    http, sessions, settings, published
):
    me = RestClient(http, uuid.uuid4())
    await grant(sessions, me.user, published.product)
    v1 = published.v1["versionId"]
    manifest = await _manifest(me, await _start(me, published.product, versionId=v1), page_size=50)
    big_chunks = next(f for f in manifest if f["path"] == "bin/big.dat")["chunks"]
    damaged = bytearray(published.v1_files["bin/big.dat"])
    hit = [big_chunks[3], big_chunks[-2]]
    for chunk in hit:  # flip a byte in the middle of two chunks
        damaged[int(chunk["offset"]) + int(chunk["sizeBytes"]) // 2] ^= 0xFF
    local = {**published.v1_files, "bin/big.dat": bytes(damaged)}
    del local["docs/readme.txt"]

    async with TopicReader(settings.kafka_bootstrap_servers, DOWNLOAD_EVENTS_TOPIC) as reader:
        status, body = await me.call(
            "POST",
            f"{DL}/verifications",
            json={"productId": str(published.product), "versionId": v1, "files": _reported(local, manifest)},
        )
        assert status == 200, body
        [event] = await reader.wait_for(about(me.user, VERIFICATION_COMPLETED))
    result = body["verification"]
    assert result["status"] == "COMPLETED_ERRORS"
    assert (result["checkedFilesCount"], result["corruptedFilesCount"], result["missingFilesCount"]) == (
        5,
        1,
        1,
    )
    by_path = {d["path"]: d for d in result["damagedFiles"]}
    assert by_path["bin/big.dat"]["problem"] == "HASH_MISMATCH"
    assert [c["chunkHash"] for c in by_path["bin/big.dat"]["chunks"]] == [c["chunkHash"] for c in hit]
    assert by_path["docs/readme.txt"]["problem"] == "MISSING"
    assert_cloud_event(event)
    assert (
        event["data"] | {"status": "completed_errors", "corruptedFilesCount": 1, "missingFilesCount": 1}
        == event["data"]
    )
    assert sorted(event["data"]["filesRequiringRedownload"]) == ["bin/big.dat", "docs/readme.txt"]

    async with httpx.AsyncClient(timeout=60) as client:
        for chunk in by_path["bin/big.dat"]["chunks"]:
            start = int(chunk["offset"])
            damaged[start : start + int(chunk["sizeBytes"])] = await _fetch(client, chunk)
        readme = b"".join([await _fetch(client, c) for c in by_path["docs/readme.txt"]["chunks"]])
    repaired = {**local, "bin/big.dat": bytes(damaged), "docs/readme.txt": readme}
    assert repaired == published.v1_files
    status, body = await me.call(
        "POST",
        f"{DL}/verifications",
        json={"productId": str(published.product), "versionId": v1, "files": _reported(repaired, manifest)},
    )
    assert (status, body["verification"]["status"]) == (200, "COMPLETED_OK")
    assert body["verification"].get("damagedFiles", []) == []


async def test_a_tampered_chunk_link_is_refused_by_the_store(http, sessions, published):
    me = RestClient(http, uuid.uuid4())
    await grant(sessions, me.user, published.product)
    manifest = await _manifest(me, await _start(me, published.product), page_size=50)
    url = manifest[0]["chunks"][0]["url"]
    signature = url.rindex("X-Amz-Signature=") + len("X-Amz-Signature=")
    forged_signature = url[:signature] + ("0" if url[signature] != "0" else "1") + url[signature + 1 :]
    longer = url.replace("X-Amz-Expires=", "X-Amz-Expires=9")
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).status_code == 200
        assert (await client.get(forged_signature)).status_code == 403
        assert (await client.get(longer)).status_code == 403


async def test_an_expired_chunk_link_is_refused_by_the_store(settings, published):
    """The same object signed the way manifests sign it, once now and once as if 20 minutes ago (its
    15 minutes are over): the store serves the first and refuses the second."""
    build = v1_build(published)
    chunk = build.files[0].chunks[0]
    presigner = Presigner(
        settings.s3_endpoint_url,
        settings.s3_bucket,
        settings.s3_region,
        settings.s3_access_key_id,
        settings.s3_secret_access_key,
    )
    key = object_key(chunk.chunk_id, chunk.compressed_sha256)
    now = datetime.now(UTC)
    fresh = presigner.url(key, expires_in=900, now=now)
    expired = presigner.url(key, expires_in=900, now=now - timedelta(minutes=20))
    async with httpx.AsyncClient() as client:
        assert (await client.get(fresh)).status_code == 200
        assert (await client.get(expired)).status_code == 403


async def test_another_user_sees_nothing_of_the_owners_content(http, sessions, published):
    owner, stranger = RestClient(http, uuid.uuid4()), RestClient(http, uuid.uuid4())
    await grant(sessions, owner.user, published.product)
    download = await _start(owner, published.product)
    status, body = await stranger.call("GET", f"{DL}/downloads/{download}/manifest")
    assert (status, error_reason(body)) == (404, "DOWNLOAD_NOT_FOUND")
    status, body = await stranger.call("GET", f"{DL}/products/{published.product}/versions")
    assert (status, error_reason(body)) == (403, "PRODUCT_ACCESS_DENIED")
    status, body = await stranger.call(
        "POST",
        f"{DL}/verifications",
        json={"productId": str(published.product), "versionId": published.v1["versionId"], "files": []},
    )
    assert (status, error_reason(body)) == (403, "PRODUCT_ACCESS_DENIED")
    status, body = await stranger.call(
        "POST",
        f"{DL}/updates/check",
        json={
            "installedProducts": [
                {"productId": str(published.product), "installedVersionId": published.v1["versionId"]}
            ]
        },
    )
    assert status == 200
    [update] = body["updates"]
    assert update.get("latestVersionId", "") == "" and update.get("updateAvailable", False) is False

    status, listed = await owner.call(
        "GET", f"{DL}/products/{published.product}/versions", params={"branch": "public"}
    )
    assert status == 200
    assert [v["versionName"] for v in listed["versions"]] == ["1.1.0", "1.0.0"]


async def test_an_interrupted_publish_uploads_only_what_is_still_missing(grpc_target, tmp_path):
    """Half of the chunks were uploaded by a run that died before committing; the re-run sends the rest."""
    product = uuid.uuid4()
    directory = write_tree(tmp_path / "build", {"a.bin": seeded(21, 6 * MiB), "b.bin": seeded(22, 3 * MiB)})
    build = scan(directory)
    async with Connection(mint("service:ci", roles=("service",)), grpc_target) as conn:
        stub = download_service_pb2_grpc.DownloadServiceStub(conn.channel)
        begun = await conn.call(stub.BeginVersionUpload, begin_request(build, str(product), "7", "", ""))
        half = list(begun.missing_chunks)[: len(begun.missing_chunks) // 2]
        assert half
        await upload_missing(build, half)
    report = await asyncio.to_thread(run_publish, product, "7", directory)
    assert report["uploadedChunks"] == len(begun.missing_chunks) - len(half)
    assert report["deduplicatedChunks"] == len(half)
