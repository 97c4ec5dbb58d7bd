"""Update checks and verification against the real stack: the user's branch from the download settings,
what an update costs, ownership, replays and bad input."""

from __future__ import annotations

import hashlib
import random
import uuid

import grpc
import pytest

from download.v1 import download_service_pb2 as pb
from download.v1 import download_service_pb2_grpc
from tests.support.auth import user_metadata
from tests.support.grpc_errors import failure
from tests.support.ownership import grant
from tests.support.publishing import publish_files

RUN = uuid.uuid4().hex


def seeded(seed: int, size: int) -> bytes:
    return random.Random(f"{RUN}-{seed}").randbytes(size)


@pytest.fixture
def downloads(channel) -> download_service_pb2_grpc.DownloadServiceStub:
    return download_service_pb2_grpc.DownloadServiceStub(channel)


def _check(product: uuid.UUID, installed: str) -> pb.CheckUpdatesRequest:
    return pb.CheckUpdatesRequest(
        installed_products=[pb.InstalledProduct(product_id=str(product), installed_version_id=installed)]
    )


async def test_updates_follow_the_users_branch_and_count_only_what_changed(
    grpc_target, downloads, sessions, tmp_path
):
    product, user = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    same, changed = seeded(1, 2 * 1024 * 1024), seeded(2, 600_000)
    v1 = await publish_files(grpc_target, product, "1", {"same": same, "changed": changed}, tmp_path / "1")
    added = f"new file {RUN}".encode()
    edited = {"same": same, "changed": seeded(3, 600_000), "added": added}
    v2 = await publish_files(grpc_target, product, "2", edited, tmp_path / "2", release_notes="two")
    beta = await publish_files(
        grpc_target, product, "3-beta", {"same": same}, tmp_path / "3", branch="beta", release_notes="beta"
    )
    md = user_metadata(user)

    [update] = (await downloads.CheckUpdates(_check(product, v1.version.version_id), metadata=md)).updates
    assert (update.branch, update.latest_version_id, update.release_notes) == (
        "public",
        v2.version.version_id,
        "two",
    )
    assert update.update_available
    assert update.bytes_to_write == 600_000 + len(added)
    assert update.bytes_to_download == v2.uploaded_bytes  # exactly the chunks v2 added to the store

    await downloads.UpdateDownloadSettings(
        pb.UpdateDownloadSettingsRequest(
            settings=pb.DownloadSettings(
                product_branches=[pb.ProductBranch(product_id=str(product), branch="beta")]
            )
        ),
        metadata=md,
    )
    [update] = (await downloads.CheckUpdates(_check(product, v1.version.version_id), metadata=md)).updates
    assert (update.branch, update.latest_version_name, update.bytes_to_download) == ("beta", "3-beta", 0)
    assert update.bytes_to_write == 0  # `same` is unchanged; the other files are simply not in beta
    [current] = (await downloads.CheckUpdates(_check(product, beta.version.version_id), metadata=md)).updates
    assert not current.update_available and current.bytes_to_download == 0


async def test_check_updates_refuses_bad_input(downloads):
    md = user_metadata(uuid.uuid4())
    code, reason, fields = await failure(downloads.CheckUpdates(pb.CheckUpdatesRequest(), metadata=md))
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ["installed_products"],
    )
    product = str(uuid.uuid4())
    not_a_uuid = pb.CheckUpdatesRequest(
        installed_products=[pb.InstalledProduct(product_id=product, installed_version_id="nope")]
    )
    code, reason, fields = await failure(downloads.CheckUpdates(not_a_uuid, metadata=md))
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ["installed_products[0].installed_version_id"],
    )
    twice = pb.CheckUpdatesRequest(
        installed_products=[
            pb.InstalledProduct(product_id=product, installed_version_id=str(uuid.uuid4())),
            pb.InstalledProduct(product_id=product, installed_version_id=str(uuid.uuid4())),
        ]
    )
    code, reason, fields = await failure(downloads.CheckUpdates(twice, metadata=md))
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ["installed_products[1].product_id"],
    )


async def test_a_verification_replay_returns_the_first_result(grpc_target, downloads, sessions, tmp_path):
    product, user = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    content = seeded(4, 100_000)
    v1 = await publish_files(grpc_target, product, "1", {"a.bin": content, "b.bin": b"b"}, tmp_path / "1")
    request = pb.VerifyInstallationRequest(
        product_id=str(product),
        version_id=v1.version.version_id,
        files=[
            pb.InstalledFile(
                path="a.bin", size_bytes=len(content), sha256=hashlib.sha256(content).hexdigest()
            )
        ],
        request_id=str(uuid.uuid4()),
    )
    first = await downloads.VerifyInstallation(request, metadata=user_metadata(user))
    result = first.verification
    assert result.status == pb.VerificationResult.COMPLETED_ERRORS
    assert [(d.path, d.problem) for d in result.damaged_files] == [("b.bin", pb.DamagedFile.MISSING)]
    assert result.repair_size_bytes == result.damaged_files[0].chunks[0].compressed_size_bytes > 0
    again = await downloads.VerifyInstallation(request, metadata=user_metadata(user))
    assert again.verification.verification_id == result.verification_id


async def test_verification_refuses_unknown_versions_and_bad_files(
    grpc_target, downloads, sessions, tmp_path
):
    product, user = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    md = user_metadata(user)
    unknown = pb.VerifyInstallationRequest(product_id=str(product), version_id=str(uuid.uuid4()))
    code, reason, _ = await failure(downloads.VerifyInstallation(unknown, metadata=md))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "PRODUCT_VERSION_NOT_FOUND")
    bad = pb.VerifyInstallationRequest(
        product_id=str(product),
        version_id=str(uuid.uuid4()),
        files=[pb.InstalledFile(path="../x", size_bytes=-1, sha256="zz")],
    )
    code, reason, fields = await failure(downloads.VerifyInstallation(bad, metadata=md))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert fields == ["files[0].size_bytes", "files[0].sha256"]
    # The path rules the contract cannot state are checked once the contract's rules pass.
    escaping = pb.VerifyInstallationRequest(
        product_id=str(product),
        version_id=str(uuid.uuid4()),
        files=[pb.InstalledFile(path="../x", size_bytes=1, sha256="0" * 64)],
    )
    code, reason, fields = await failure(downloads.VerifyInstallation(escaping, metadata=md))
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ["files[0].path"],
    )
