"""Bench cases: the launcher's download engine (SPEC §10), against baselines measured in the same run.

throughput   the data phase of a full install of a published version (BENCH_LAUNCHER_MIB MiB of
             incompressible bytes in two files, 32) by the engine (parallel GETs, decompress, SHA-256,
             staged writes, file hashes, atomic moves: first chunk requested to last file in place) vs a
             bare parallel HTTP GET of the same chunk objects through the same signed links with the same
             number of streams (bytes read into memory, nothing else). Ratio bare time / engine time per
             round; goal: median >= 0.8. The whole command (version lookup, session, manifest pages,
             completion report) is printed beside it.
             BENCH_LAUNCHER_ROUNDS rounds (3), alternating order.
cap          the same install under a bandwidth limit of BENCH_LAUNCHER_CAP_KBPS (80000 = 10 MB/s): the
             rate of bytes read from the first to the last byte over the cap; goal within +-10 %.
kill -9      `python -m client install` under a 5 MB/s cap, killed (SIGKILL) once 40 % of the chunks are
             journaled, then run again without a cap: chunks and bytes the restart fetched vs what the
             killed run had not yet verified (re-fetched = the difference; the goal: nothing verified is
             fetched again, so only the chunks in flight at the kill are lost).
One service process with WORKERS_ENABLED=1; the engine talks to it directly (no Envoy, no WebSocket).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import httpx

from client.engine.engine import Engine, connections_for
from client.engine.journal import parse
from client.engine.record import Installs
from client.sdk.connection import Connection
from client.sdk.download_settings import DownloadSettingsChange, DownloadSettingsClient
from client.sdk.downloads import DownloadsClient
from client.sdk.publishing import publish
from library.v1 import library_service_pb2, library_service_pb2_grpc
from scripts.bench import fixtures
from scripts.bench.procs import ROOT

GOAL_VS_BARE_GET = 0.8
GOAL_CAP_ERROR = 0.10
MiB = 1024 * 1024


async def _grant(target: str, product_id: uuid.UUID) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        await library_service_pb2_grpc.LibraryServiceStub(channel).GrantEntitlements(
            library_service_pb2.GrantEntitlementsRequest(
                user_id=str(fixtures.BENCH_USER),
                items=[
                    library_service_pb2.EntitlementGrant(
                        product_id=str(product_id), acquisition_type=library_service_pb2.LibraryItem.PURCHASE
                    )
                ],
            ),
            metadata=(("authorization", f"Bearer {fixtures.service_token()}"),),
        )


async def _publish(target: str, work: Path, size: int) -> tuple[uuid.UUID, int]:
    product_id = uuid.uuid4()
    build = work / "build"
    build.mkdir()
    (build / "assets.pak").write_bytes(os.urandom(size * 3 // 4))
    (build / "levels.pak").write_bytes(os.urandom(size // 4))
    async with Connection(fixtures.service_token(), target) as conn:
        report = await publish(conn, build, product_id=str(product_id), version_name="1.0")
    await _grant(target, product_id)
    return product_id, report.distinct_chunks


async def _limit(conn: Connection, kbps: int) -> None:
    await DownloadSettingsClient(conn, device_id="bench").update(
        DownloadSettingsChange(bandwidth_limit_kbps=kbps)
    )


async def _engine_install(conn: Connection, product_id: uuid.UUID, work: Path) -> tuple[float, float]:
    """(seconds of the data: first chunk requested to last file verified and in place, seconds of the
    whole command: version lookup, session, manifest and completion report included)."""
    engine = Engine(conn, "", installs=Installs(work))
    with tempfile.TemporaryDirectory(dir=work) as games:
        outcome = await engine.install(str(product_id), version="1.0", directory=Path(games))
        return outcome.transfer_seconds, outcome.seconds


async def _bare_get(conn: Connection, product_id: uuid.UUID, streams: int) -> float:
    """The same objects through the same kind of signed links, read into memory by `streams` GETs at once."""
    downloads = DownloadsClient(conn)
    session = await downloads.start(str(product_id), installation_path="/bench/bare", version_id="")
    urls = {}
    async for _, page in downloads.manifest(session.download_id):
        urls.update({c.chunk_hash: c.url for f in page.files for c in f.chunks})
    await downloads.cancel(session.download_id)
    pending = list(urls.values())
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def worker() -> None:
            while pending:
                reply = await http.get(pending.pop())
                assert reply.status_code == 200, reply.status_code

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(streams)))
        return time.perf_counter() - started


async def _capped_rate(conn: Connection, product_id: uuid.UUID, work: Path, kbps: int) -> float:
    await _limit(conn, kbps)
    engine = Engine(conn, "", installs=Installs(work))
    samples: list[tuple[float, int]] = []

    async def sample() -> None:
        while True:
            samples.append((time.perf_counter(), engine.counters.read_bytes))
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    try:
        with tempfile.TemporaryDirectory(dir=work) as games:
            await engine.install(str(product_id), version="1.0", directory=Path(games))
    finally:
        sampler.cancel()
        await _limit(conn, 0)
    first = next((t, n) for t, n in samples if n > 0)
    last = next((t, n) for t, n in samples if n == engine.counters.read_bytes)
    return (last[1] - first[1]) / (last[0] - first[0])


async def _kill_and_resume(target: str, product_id: uuid.UUID, work: Path, distinct: int) -> dict:
    async with Connection(fixtures.user_token(), target) as conn:
        await _limit(conn, 40_000)
    games, state = work / "killed", work / "state"
    state.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "LIBRARY_TOKEN": fixtures.user_token(),
        "LIBRARY_TARGET": target,
        "LIBRARY_STATE_DIR": str(state),
        "LIBRARY_WS_URL": "ws://127.0.0.1:9/unused",  # no relay in the bench: settings come with the start
    }
    command = [sys.executable, "-m", "client", "--json", "install", str(product_id), "--dir", str(games)]
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    journal = games / ".launcher" / "journal"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.returncode is None:
        state_now = parse(journal.read_text()) if journal.exists() else None
        if state_now and len(state_now.chunks) >= distinct * 0.4:
            break
        await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    at_kill = parse(journal.read_text())
    async with Connection(fixtures.user_token(), target) as conn:
        await _limit(conn, 0)
        engine = Engine(conn, "", installs=Installs(state))
        await engine.install(str(product_id), version="1.0", directory=games)
    c = engine.counters
    return {
        "chunks": distinct,
        "journaled_at_kill": len(at_kill.chunks),
        "restart_fetched_chunks": c.fetched_chunks,
        "restart_fetched_bytes": c.fetched_bytes,
        "refetched_chunks": c.fetched_chunks - (distinct - len(at_kill.chunks)),
        "streams": connections_for(3),
    }


async def _measure(target: str, work: Path) -> dict:
    size = int(os.environ.get("BENCH_LAUNCHER_MIB", "32")) * MiB
    rounds = int(os.environ.get("BENCH_LAUNCHER_ROUNDS", "3"))
    cap_kbps = int(os.environ.get("BENCH_LAUNCHER_CAP_KBPS", "80000"))
    product_id, distinct = await _publish(target, work, size)
    async with Connection(fixtures.user_token(), target) as conn:
        await _limit(conn, 0)
        settings = await DownloadsClient(conn).settings()
        streams = connections_for(settings.max_concurrent_downloads)
        await _engine_install(conn, product_id, work)  # warm-up: connections, link cache
        ratios, engines, commands, bares = [], [], [], []
        for i in range(rounds):
            if i % 2:
                bare = await _bare_get(conn, product_id, streams)
                engine, command = await _engine_install(conn, product_id, work)
            else:
                engine, command = await _engine_install(conn, product_id, work)
                bare = await _bare_get(conn, product_id, streams)
            ratios.append(bare / engine)
            engines.append(engine)
            commands.append(command)
            bares.append(bare)
        cap_rate = await _capped_rate(conn, product_id, work, cap_kbps)
    kill = await _kill_and_resume(target, product_id, work, distinct)
    return {
        "bytes": size,
        "streams": streams,
        "engine_seconds": statistics.median(engines),
        "command_seconds": statistics.median(commands),
        "bare_seconds": statistics.median(bares),
        "ratios": ratios,
        "ratio": statistics.median(ratios),
        "cap_bytes_per_second": cap_kbps * 125,
        "capped_rate": cap_rate,
        "cap_error": cap_rate / (cap_kbps * 125) - 1,
        "kill": kill,
    }


def run(bench) -> dict:
    """Runs the cases against one service process; prints their lines; returns the results."""
    print(
        "bench: the launcher's download engine vs bare parallel GETs; its bandwidth cap; kill -9", flush=True
    )
    target = bench.start_service(0, workers=True)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-launcher-") as work:
            result = asyncio.run(_measure(target, Path(work)))
    finally:
        bench.procs.stop("server-1")
    ratio, error, kill = result["ratio"], result["cap_error"], result["kill"]
    goals = [
        {
            "goal": f"launcher install / bare parallel GET (throughput) >= {GOAL_VS_BARE_GET}",
            "value": ratio,
            "status": "PASS" if ratio >= GOAL_VS_BARE_GET else "MISS",
        },
        {
            "goal": f"bandwidth cap error within +-{GOAL_CAP_ERROR:.0%}",
            "value": error,
            "status": "PASS" if abs(error) <= GOAL_CAP_ERROR else "MISS",
        },
        {
            "goal": "after kill -9 nothing verified is fetched again",
            "value": kill["refetched_chunks"],
            "status": "PASS" if kill["refetched_chunks"] <= 0 else "MISS",
        },
    ]
    print()
    print("Launcher downloads")
    print(
        f"  install {result['bytes'] // MiB} MiB   {result['engine_seconds'] * 1000:.0f} ms vs bare GETs "
        f"{result['bare_seconds'] * 1000:.0f} ms ({result['streams']} streams, medians; the whole command "
        f"with session, manifest and completion {result['command_seconds'] * 1000:.0f} ms)"
    )
    print(
        f"  cap {result['cap_bytes_per_second'] / 1e6:.1f} MB/s    "
        f"measured {result['capped_rate'] / 1e6:.2f} MB/s"
    )
    print(
        f"  kill -9         {kill['journaled_at_kill']} of {kill['chunks']} chunks journaled at the kill; "
        f"the restart fetched {kill['restart_fetched_chunks']} "
        f"({kill['restart_fetched_bytes'] / MiB:.1f} MiB)"
    )
    for goal in goals:
        print(f"  {goal['status']:<4}  {goal['goal']:<62} {goal['value']:.2f}")
    print()
    return {**result, "goals": goals}
