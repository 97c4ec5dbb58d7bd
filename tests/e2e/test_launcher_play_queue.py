"""The launcher's `downloads` queue, `settings downloads` and `library` as a player runs them, through Envoy's
native gRPC edge against the real stack (commands run in-process: tests.support.launcher)."""

from __future__ import annotations

import os
import uuid

import grpc
import pytest

from client.sdk.connection import Connection
from client.sdk.downloads import DownloadsClient
from library.v1 import library_service_pb2_grpc
from scripts.devtokens import mint
from tests.support.launcher import ENVOY_GRPC, launcher
from tests.support.library import upsert_products
from tests.support.ownership import grant
from tests.support.publishing import publish_files


@pytest.fixture(scope="module")
async def games(grpc_target, tmp_path_factory) -> tuple[uuid.UUID, uuid.UUID]:
    """Two small games with names in the product cache: Alpha Quest (public and beta), Beta Racer (public)."""
    alpha, racer = uuid.uuid4(), uuid.uuid4()
    root = tmp_path_factory.mktemp("builds")
    await publish_files(grpc_target, alpha, "1.0", {"alpha.bin": os.urandom(8192)}, root / "a1")
    await publish_files(
        grpc_target, alpha, "1.1b", {"alpha.bin": os.urandom(8192)}, root / "a2", branch="beta"
    )
    await publish_files(grpc_target, racer, "1.0", {"racer.bin": os.urandom(8192)}, root / "r1")
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        stub = library_service_pb2_grpc.LibraryServiceStub(channel)
        await upsert_products(stub, {alpha: "Alpha Quest", racer: "Beta Racer"})
    return alpha, racer


@pytest.fixture
async def player(sessions, games, tmp_path) -> uuid.UUID:
    user = uuid.uuid4()
    await grant(sessions, user, *games)
    return user


async def test_download_settings_round_trip_and_the_queue_is_reordered_paused_resumed_and_cancelled(
    games, player, tmp_path
):
    alpha, racer = games
    device = tmp_path / "pc"

    code, changed, err = await launcher(
        player,
        device,
        "--json",
        "settings",
        "downloads",
        "--max-concurrent",
        "1",
        "--bandwidth",
        "5000",
        "--schedule",
        "01:00-07:00",
        "--time-zone",
        "UTC",
        "--branch",
        f"{alpha}=beta",
    )
    assert code == 0, err
    assert (changed["maxConcurrentDownloads"], changed["bandwidthLimitKbps"]) == (1, 5000)
    assert changed["schedule"] == {"startTime": "01:00", "endTime": "07:00", "timeZone": "UTC"}
    assert changed["productBranches"] == {str(alpha): "beta"}
    code, shown, _ = await launcher(player, device, "--json", "settings", "downloads")
    assert (code, shown) == (0, changed)
    code, cleared, _ = await launcher(player, device, "--json", "settings", "downloads", "--no-schedule")
    assert (code, cleared["schedule"], cleared["productBranches"]) == (0, None, {str(alpha): "beta"})

    # Two downloads with one slot: Alpha Quest (on its beta branch) runs, Beta Racer waits.
    async with Connection(mint(str(player)), ENVOY_GRPC) as connection:
        client = DownloadsClient(connection, device_id="pc")
        first = await client.start(str(alpha), installation_path=str(tmp_path / "alpha"))
        second = await client.start(str(racer), installation_path=str(tmp_path / "racer"))
    assert first.branch == "beta"

    async def queue(*flags: str) -> list[tuple[str, str, int]]:
        code, listed, err = await launcher(player, device, "--json", "downloads", *flags)
        assert code == 0, err
        return [(d["downloadId"], d["status"], d.get("priority", 0)) for d in listed["downloads"]]

    one, two = first.download_id, second.download_id
    assert await queue() == [(one, "DOWNLOADING", 0), (two, "QUEUED", 0)]

    code, moved, err = await launcher(
        player, device, "--json", "downloads", "move", two[:8], "--priority", "50"
    )
    assert (code, moved["download"]["priority"], moved["download"]["status"]) == (0, 50, "QUEUED"), err
    code, _, err = await launcher(player, device, "downloads", "pause", one)
    assert code == 0, err
    assert await queue() == [(two, "DOWNLOADING", 50), (one, "PAUSED", 0)]
    code, out, err = await launcher(player, device, "downloads", "resume", one)
    assert (code, out.strip()) == (0, f"download {one} is queued"), err
    code, out, err = await launcher(player, device, "downloads", "cancel", two)
    assert (code, out.strip()) == (0, f"download {two} is cancelled"), err
    assert await queue() == [(one, "DOWNLOADING", 0)]
    assert await queue("--all") == [(one, "DOWNLOADING", 0), (two, "CANCELLED", 50)]

    code, table, err = await launcher(player, device, "downloads")
    assert code == 0, err
    assert "Alpha Quest" in table and one in table and "downloading" in table and "Beta Racer" not in table

    # Another player's download is out of reach, as if it did not exist; a bad id names the problem.
    code, _, err = await launcher(uuid.uuid4(), device, "downloads", "cancel", one)
    assert (code, err.split(":")[:2]) == (1, ["error", " DOWNLOAD_NOT_FOUND"])
    code, _, err = await launcher(player, device, "downloads", "pause", "ffffffff")
    assert (code, err.strip()) == (
        1,
        "error: no download of yours starts with 'ffffffff' (see `downloads --all`)",
    )
    code, _, err = await launcher(player, device, "downloads", "resume", one)
    assert (code, err.split(":")[:2]) == (1, ["error", " INVALID_STATE_TRANSITION"])


async def test_library_table_and_json(games, player, tmp_path):
    alpha, racer = games
    device = tmp_path / "pc"

    code, table, err = await launcher(player, device, "library")
    assert code == 0, err
    assert "your library (2 games)" in table
    assert table.index("Alpha Quest") < table.index("Beta Racer")
    assert str(alpha) in table and "not installed" in table and "never" in table

    code, listed, err = await launcher(player, device, "--json", "library", "--search", "RACER")
    assert code == 0, err
    [item] = listed["items"]
    assert (item["product_id"], item["name"], item["installation_status"]) == (
        str(racer),
        "Beta Racer",
        "NOT_INSTALLED",
    )
    assert (item["total_playtime_seconds"], item["last_played_at"]) == (0, None)

    code, _, err = await launcher(player, device, "library", "--status", "SOMETHING")
    assert code == 2 and "invalid choice" in err
