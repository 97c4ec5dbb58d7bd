"""The launcher's `install`, `update`, `verify` and `uninstall` as a player runs them (`python -m client`
against Envoy's gRPC edge, chunks from SeaweedFS through signed links), on a product published in three
versions with the `publish` code path."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from pathlib import Path

import pytest

from client.engine.engine import DownloadCancelled, Engine
from client.engine.fetch import READ_BLOCK
from client.engine.journal import parse
from client.engine.record import Installs
from client.engine.throttle import MIN_BURST
from client.sdk.connection import Connection
from client.sdk.download_settings import DownloadSettingsChange, DownloadSettingsClient
from client.sdk.downloads import DownloadsClient, Status
from content_store.chunking import cut
from scripts.devtokens import mint
from server.app import Application
from tests.support.launcher import (
    ENVOY_GRPC,
    MiB,
    Product,
    identities,
    launcher,
    publish_product,
    spawn,
    tree,
)
from tests.support.ownership import grant
from tests.support.processes import free_port
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
async def product(grpc_target, tmp_path_factory) -> Product:
    return await publish_product(ENVOY_GRPC, tmp_path_factory.mktemp("builds"))


@pytest.fixture
async def player(sessions, product, tmp_path) -> tuple[uuid.UUID, Path]:
    """(user, the device's state directory): a fresh player owning the product."""
    user = uuid.uuid4()
    await grant(sessions, user, product.product_id)
    state = tmp_path / "device"
    state.mkdir()
    return user, state


async def set_bandwidth(user: uuid.UUID, kbps: int, max_concurrent: int | None = None) -> None:
    async with Connection(mint(str(user)), ENVOY_GRPC) as conn:
        change = DownloadSettingsChange(bandwidth_limit_kbps=kbps, max_concurrent_downloads=max_concurrent)
        await DownloadSettingsClient(conn, device_id="test").update(change)


async def sessions_of(user: uuid.UUID):
    async with Connection(mint(str(user)), ENVOY_GRPC) as conn:
        return await DownloadsClient(conn).list_all()


async def test_install_update_switch_branch_and_roll_back(product, player, tmp_path):
    user, state = player
    p, games = str(product.product_id), tmp_path / "games" / "x"

    code, out, err = await launcher(
        user, state, "--json", "install", p, "--version", "1.0", "--dir", str(games)
    )
    assert code == 0, err
    assert tree(games) == product.versions["1.0"]
    assert (out["versionName"], out["copiedChunks"]) == ("1.0", 0)
    # Each distinct chunk once (the duplicate file and repeated chunks are not fetched twice).
    assert out["fetchedBytes"] == product.reports["1.0"].version.download_size_bytes
    assert out["fetchedChunks"] == product.reports["1.0"].distinct_chunks
    [session] = await sessions_of(user)
    assert (session.status, session.version_id) == (Status.COMPLETED, product.version_id("1.0"))

    # An update downloads what CheckUpdates said and writes only the files that change.
    before = identities(games)
    code, out, err = await launcher(user, state, "--json", "update")
    assert code == 0, err
    [update] = out["updates"]
    result = update["result"]
    assert (update["latestVersionName"], result["previousVersionId"]) == ("2.0", product.version_id("1.0"))
    assert tree(games) == product.versions["2.0"]
    assert result["fetchedBytes"] == update["bytesToDownload"]
    assert result["fetchedBytes"] < product.reports["2.0"].version.download_size_bytes / 4
    assert result["writtenFiles"] == ["bin/big.dat", "data/new.pak", "docs/readme.txt"]
    assert sum(len(product.versions["2.0"][f]) for f in result["writtenFiles"]) == update["bytesToWrite"]
    assert result["removedFiles"] == ["old/dropped.txt"]
    after = identities(games)
    for path in ("data/a.pak", "data/copy-of-a.pak", "empty.cfg"):
        assert after[path] == before[path], f"{path} was rewritten"
    assert not (games / "old").exists()

    code, out, err = await launcher(user, state, "--json", "update")
    assert code == 0 and out["updates"][0]["updateAvailable"] is False and out["updates"][0]["result"] is None

    # Another branch, then a rollback: chunks still on disk are copied, not downloaded.
    code, out, err = await launcher(user, state, "--json", "install", p, "--branch", "beta")
    assert code == 0, err
    assert (out["versionName"], tree(games)) == ("3.0", product.versions["3.0"])
    assert out["writtenFiles"] == ["bin/big.dat"]
    code, out, err = await launcher(user, state, "--json", "install", p, "--version", "1.0")
    assert code == 0, err
    assert tree(games) == product.versions["1.0"]
    assert out["copiedChunks"] > 0
    assert out["fetchedBytes"] < product.reports["1.0"].version.download_size_bytes / 2

    code, out, err = await launcher(user, state, "uninstall", p)
    assert code == 0, err
    assert not games.exists()
    code, _, err = await launcher(user, state, "verify", p)
    assert code == 7 and "not installed" in err


async def test_not_enough_disk_space_is_a_clear_error_before_anything_starts(product, player, tmp_path):
    user, state = player
    games = tmp_path / "games"
    code, _, err = await launcher(
        user, state, "install", str(product.product_id), "--dir", str(games), "--reserve", str(2**60)
    )
    assert code == 3
    assert "not enough disk space" in err and "Traceback" not in err
    assert not games.exists()
    assert await sessions_of(user) == []


async def test_verify_names_damaged_files_and_repair_fetches_only_their_bad_chunks(product, player, tmp_path):
    user, state = player
    p, games = str(product.product_id), tmp_path / "games"
    code, out, err = await launcher(user, state, "install", p, "--version", "2.0", "--dir", str(games))
    assert code == 0, err
    assert "files written" in out and "2.0" in out  # the human table
    code, out, err = await launcher(user, state, "verify", p)
    assert (code, out.strip()) == (0, f"all {len(product.versions['2.0'])} files verified")

    flip_byte(games / "bin/big.dat", 3 * MiB)  # in the middle of one chunk
    (games / "docs/readme.txt").unlink()
    before = identities(games)

    code, out, err = await launcher(user, state, "--json", "verify", p)
    assert code == 6
    assert out["damagedFiles"] == [
        {"path": "bin/big.dat", "problem": "hash_mismatch"},
        {"path": "docs/readme.txt", "problem": "missing"},
    ]
    code, out, err = await launcher(user, state, "--json", "verify", p, "--repair")
    assert code == 0, err
    assert tree(games) == product.versions["2.0"]
    assert out["repairedFiles"] == ["bin/big.dat", "docs/readme.txt"]
    assert out["fetchedChunks"] == 2  # the damaged chunk of the big file, and the readme's one chunk
    assert out["fetchedBytes"] == out["repairSizeBytes"]
    big = product.versions["2.0"]["bin/big.dat"]
    assert out["copiedBytes"] == len(big) - _size_of_chunk_at(big, 3 * MiB)
    after = identities(games)
    assert all(after[f] == before[f] for f in before if f != "bin/big.dat")


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _size_of_chunk_at(data: bytes, offset: int) -> int:
    """The size of the chunk (as the store cuts `data`) that holds byte `offset`."""
    return next(len(piece) for start, piece in cut(data) if start <= offset < start + len(piece))


async def test_kill_9_mid_download_then_restart_fetches_only_what_it_lacked(product, player, tmp_path):
    user, state = player
    p, games = str(product.product_id), tmp_path / "games"
    await set_bandwidth(user, 24_000, max_concurrent=1)  # 3 MB/s, 4 streams: long enough to be killed
    journal = games / ".launcher" / "journal"
    proc = await spawn(user, state, "--json", "install", p, "--version", "2.0", "--dir", str(games))

    def journaled() -> int:
        state_now = parse(journal.read_text()) if journal.exists() else None
        return len(state_now.chunks) if state_now else 0

    await wait_until(lambda: journaled() >= 3, what="3 chunks journaled", timeout=60, every=0.02)
    proc.kill()  # SIGKILL: no cleanup, no final report
    await proc.wait()
    at_kill = parse(journal.read_text())
    distinct = product.reports["2.0"].distinct_chunks
    assert 3 <= len(at_kill.chunks) < distinct, "killed mid-download"

    await set_bandwidth(user, 0)
    code, out, err = await launcher(
        user, state, "--json", "install", p, "--version", "2.0", "--dir", str(games)
    )
    assert code == 0, err
    assert tree(games) == product.versions["2.0"]
    assert out["downloadId"] == at_kill.download_id  # the same session goes on
    assert out["resumedChunks"] == len(at_kill.chunks)
    assert out["fetchedChunks"] == distinct - len(at_kill.chunks)  # nothing journaled is fetched again
    assert not journal.exists()
    [session] = await sessions_of(user)
    assert session.status == Status.COMPLETED


async def test_a_lower_bandwidth_limit_slows_a_running_download_at_once(
    product, player, tmp_path, gateway_on_ws_port
):
    """The limit changes through the settings API while the download runs; the engine hears it on the
    download WebSocket. From the moment it applied it, the bytes read stay within the new cap."""
    user, state = player
    await set_bandwidth(user, 16_000, max_concurrent=1)  # 2 MB/s over 4 streams
    token = mint(str(user))
    samples: list[tuple[float, int]] = []
    async with Connection(token, ENVOY_GRPC) as conn:
        engine = Engine(conn, token, installs=Installs(state))
        async with engine.listening() as socket:
            await asyncio.wait_for(socket.ready.wait(), 10)

            async def sample() -> None:
                while True:
                    samples.append((time.monotonic(), engine.counters.read_bytes))
                    await asyncio.sleep(0.01)

            sampler = asyncio.create_task(sample())
            games = tmp_path / "games"
            install = asyncio.create_task(
                engine.install(str(product.product_id), version="1.0", directory=games)
            )
            await wait_until(lambda: engine.counters.read_bytes >= MiB, what="1 MiB read", every=0.01)
            await set_bandwidth(user, 4_000)  # 500 kB/s
            await wait_until(lambda: engine.limit_changes[-1][1] == 500_000, what="the new limit", every=0.01)
            applied_at, start = engine.limit_changes[-1][0], engine.counters.read_bytes
            await wait_until(
                lambda: engine.counters.read_bytes >= start + 700_000, what="700 kB more", every=0.01
            )
            await set_bandwidth(user, 0)  # and off again: the rest goes at full speed
            await wait_until(lambda: engine.limit_changes[-1][1] == 0, what="no limit", every=0.01)
            released_at = engine.limit_changes[-1][0]
            await install
            sampler.cancel()
    assert tree(games) == product.versions["1.0"]
    window = [(t, n) for t, n in samples if applied_at <= t <= released_at]
    (t0, n0), (t1, n1) = window[0], window[-1]
    # What may pass beyond the cap: the bucket's burst and one read block per stream.
    allowance = MIN_BURST + 4 * READ_BLOCK
    assert n1 - n0 <= 500_000 * 1.1 * (t1 - t0) + allowance
    assert engine.counters.fetched_bytes == product.reports["1.0"].version.download_size_bytes


async def test_links_that_expire_mid_download_are_renewed_from_their_manifest_page(
    product, player, tmp_path, settings, redis
):
    """A server of its own (in this process) whose chunk links live two seconds; the download, four
    streams at 3 MB/s, takes longer than that. The links the shared server cached (for 15 minutes) are
    dropped first, so this one signs its own."""
    user, state = player
    async for key in redis.scan_iter(match="dl:chunk-links:*"):
        await redis.delete(key)
    await set_bandwidth(user, 24_000, max_concurrent=1)
    port = free_port()
    app = Application.build(
        dataclasses.replace(
            settings, grpc_port=port, workers_enabled=False, download_chunk_url_expiry_seconds=2
        )
    )
    await app.start()
    try:
        async with Connection(mint(str(user)), f"127.0.0.1:{port}") as conn:
            engine = Engine(conn, "", installs=Installs(state))
            outcome = await engine.install(str(product.product_id), version="1.0", directory=tmp_path / "g")
    finally:
        await app.stop()
    assert tree(tmp_path / "g") == product.versions["1.0"]
    assert outcome.counters.link_refreshes >= 1
    assert outcome.counters.fetched_chunks == product.reports["1.0"].distinct_chunks


async def test_a_pause_and_a_cancel_from_elsewhere_reach_the_running_download(
    product, player, tmp_path, gateway_on_ws_port
):
    user, state = player
    await set_bandwidth(user, 8_000, max_concurrent=1)  # 1 MB/s: the download is still running
    token = mint(str(user))
    async with Connection(token, ENVOY_GRPC) as conn:
        engine, other_device = Engine(conn, token, installs=Installs(state)), DownloadsClient(conn)
        async with engine.listening() as socket:
            await asyncio.wait_for(socket.ready.wait(), 10)
            games = tmp_path / "games"
            install = asyncio.create_task(
                engine.install(str(product.product_id), version="1.0", directory=games)
            )
            await wait_until(lambda: engine.counters.read_bytes > 0, what="bytes arriving", every=0.01)
            await other_device.pause(engine.download_id)
            await wait_until(lambda: engine.status == "paused", what="the engine paused", every=0.01)
            await set_bandwidth(user, 0)
            await other_device.resume(engine.download_id)
            await install
            assert tree(games) == product.versions["1.0"]

            await set_bandwidth(user, 8_000)
            again = asyncio.create_task(
                engine.install(str(product.product_id), version="2.0", directory=games)
            )
            await wait_until(lambda: engine.status == "downloading", what="the update running", every=0.01)
            await other_device.cancel(engine.download_id)
            with pytest.raises(DownloadCancelled):
                await again
    assert tree(games) == product.versions["1.0"]  # the installed version is left as it was
    assert not (games / ".launcher" / "staging").exists() and not (games / ".launcher" / "journal").exists()
