"""Bench case: download progress reports (SPEC §10: 0 Postgres writes per report; throughput >= 0.8x the
heartbeat's, measured side by side in the same run).

One service process with WORKERS_ENABLED=0 (no relay or promoter writing meanwhile). The bench user owns
the bench product; a small version of it is published once (the publish SDK, as the CLI does; later
runs reuse it), the user's earlier bench downloads are cancelled and one is started, so
every report lands on a DOWNLOADING session. Then BENCH_PROGRESS_ROUNDS rounds of: h2load on
RecordPlaytimeHeartbeat, h2load on ReportDownloadProgress (same clients, streams, duration, token); the
ratio is the median of the within-round ratios. Last, N reports (h2load -n BENCH_WRITES_N) between two
pg_stat snapshots, the second taken after the process exited (see pgstats).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from client.sdk.connection import Connection
from client.sdk.publishing import publish
from download.v1 import download_service_pb2 as pb
from download.v1 import download_service_pb2_grpc
from scripts.bench import fixtures, loadgen, pgstats

GOAL_VS_HEARTBEAT = 0.8
PROGRESS = "/download.v1.DownloadService/ReportDownloadProgress"
_ACTIVE = [pb.DownloadSession.QUEUED, pb.DownloadSession.DOWNLOADING, pb.DownloadSession.PAUSED]
_FILE_BYTES = 512 * 1024  # incompressible, so the download's total is about this


def _md(token: str):
    return (("authorization", f"Bearer {token}"),)


async def _publish(target: str, source: str) -> str:
    """Publishes `source` as the bench version (the publish SDK, as the CLI does); later runs find it."""
    async with Connection(fixtures.service_token(), target) as conn:
        try:
            await publish(conn, source, product_id=str(fixtures.BENCH_PRODUCT), version_name="bench-1")
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            return "bench version published by an earlier run"
    return "bench version published (the publish SDK: Begin, PUT, Commit)"


def _download(target: str, notes: list[str]) -> bytes:
    """A DOWNLOADING session of the bench user; returns the serialized progress report to send."""
    with tempfile.TemporaryDirectory() as source:
        Path(source, "bench.bin").write_bytes(random.Random(7).randbytes(_FILE_BYTES))
        # in a child process: grpc.aio here would leave threads behind that break h2load's fork
        done = subprocess.run(
            [sys.executable, "-m", "scripts.bench.download_progress", target, source],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"publishing the bench version failed: {done.stderr.strip()[-500:]}")
        notes.append(done.stdout.strip())
    with grpc.insecure_channel(target) as channel:
        stub = download_service_pb2_grpc.DownloadServiceStub(channel)
        user = _md(fixtures.user_token())
        active = stub.ListDownloads(pb.ListDownloadsRequest(status=_ACTIVE, page_size=200), metadata=user)
        for old in active.downloads:
            stub.CancelDownload(pb.CancelDownloadRequest(download_id=old.download_id), metadata=user)
        started = stub.StartDownload(
            pb.StartDownloadRequest(
                product_id=str(fixtures.BENCH_PRODUCT), installation_path="/bench", start_now=True
            ),
            metadata=user,
        ).download
    if started.status != pb.DownloadSession.DOWNLOADING:
        raise RuntimeError(f"bench download is {pb.DownloadSession.DownloadStatus.Name(started.status)}")
    notes.append(f"download {started.download_id} ({started.total_size_bytes} bytes to transfer)")
    # the same absolute byte count every time: the speed settles at 0, the state machine stays put
    request = pb.ReportDownloadProgressRequest(
        download_id=started.download_id, downloaded_bytes=min(1000, started.total_size_bytes)
    )
    return request.SerializeToString()


def run(bench) -> dict:
    """Runs the case with the Bench's processes, knobs and load generator; prints its lines; returns the
    results for latest.json."""
    cfg = bench.cfg
    rounds = int(os.environ.get("BENCH_PROGRESS_ROUNDS", "3"))
    notes: list[str] = []
    svc = bench.start_service(0, workers=False)
    name = "server-1-noworkers"
    baseline = fixtures.choose_rpc(svc)  # the heartbeat (or the fallback it reports)
    message = _download(svc, notes)
    progress_body = bench.work / "progress.bin"
    progress_body.write_bytes(loadgen.grpc_frame(message))
    baseline_body = bench.work / "baseline.bin"
    baseline_body.write_bytes(loadgen.grpc_frame(baseline.message))
    code, details = fixtures.raw_call(svc, PROGRESS, message, fixtures.user_token())
    if code != grpc.StatusCode.OK:
        raise RuntimeError(f"ReportDownloadProgress answered {code.name}: {details}")

    def load(label: str, method: str, body: Path, **kw) -> loadgen.LoadResult:
        headers = {
            "content-type": "application/grpc",
            "te": "trailers",
            "authorization": f"Bearer {bench.token}",
        }
        if "requests" not in kw:
            kw.update(duration=cfg.duration, warmup=cfg.warmup)
        before = fixtures.handled_codes(cfg.metrics_ports[0], method)
        meter = bench.meter([name])
        result = loadgen.h2load(
            f"http://{svc}{method}",
            body,
            headers,
            clients=cfg.connections,
            streams=cfg.streams,
            log_file=bench.work / f"{label}.h2load.log",
            target=f"{svc}{method}",
            meter=meter,
            **kw,
        )
        result.cpu = meter.report(result.requests)
        (bench.work / f"{label}.h2load.log").unlink(missing_ok=True)
        codes = fixtures.codes_delta(before, fixtures.handled_codes(cfg.metrics_ports[0], method))
        result.grpc_codes = codes
        expected = "OK" if method == PROGRESS else baseline.expected_code.name
        result.bad_grpc_status = fixtures.unexpected_calls(codes, expected, result.in_flight_at_end)
        print(
            f"bench:   {label}: {result.rps:.0f} req/s, {result.failures} failed, codes {codes}", flush=True
        )
        return result

    bench.token = bench.token or fixtures.user_token()
    pairs, runs = [], {"heartbeat": [], "progress": []}
    for n in range(1, rounds + 1):
        print(f"bench: download progress round {n}/{rounds}", flush=True)
        heartbeat = load("progress_baseline", baseline.method, baseline_body)
        report = load("progress", PROGRESS, progress_body)
        runs["heartbeat"].append(heartbeat)
        runs["progress"].append(report)
        if heartbeat.rps:
            pairs.append(report.rps / heartbeat.rps)

    time.sleep(1.0)
    url = fixtures.libpq_url(cfg.database_url)
    s1 = pgstats.snapshot(url)
    writes = load("progress_pg_writes", PROGRESS, progress_body, requests=cfg.writes_n)
    bench.procs.stop(name)  # its backends publish their counters as their connections close
    time.sleep(0.5)
    pg = pgstats.diff(s1, pgstats.snapshot(url))

    ratio = statistics.median(pairs) if pairs else None
    failures = sum(r.failures for rs in runs.values() for r in rs) + writes.failures
    rows_per_report = pg.table_rows_written / writes.requests if writes.requests else None
    goals = [
        {
            "goal": f"download progress / {baseline.name} >= {GOAL_VS_HEARTBEAT}",
            "value": ratio,
            "status": "PASS" if (ratio or 0) >= GOAL_VS_HEARTBEAT else "MISS",
        },
        {
            "goal": "Postgres rows written per progress report == 0 (tables)",
            "value": rows_per_report,
            "status": "PASS" if rows_per_report == 0 else "MISS",
        },
        {"goal": "0 failed progress calls", "value": failures, "status": "PASS" if failures == 0 else "MISS"},
    ]
    best = {k: max(rs, key=lambda r: r.rps) for k, rs in runs.items()}

    def server_us(result: loadgen.LoadResult) -> float:
        per = (result.cpu or {}).get("cpu_us_per_call", {})
        return sum(v for k, v in per.items() if k != "redis")

    # what the ratio would be on an idle machine with the server the bottleneck (little moved by other work)
    cpu_ratio = (
        statistics.median(
            server_us(h) / server_us(p) for h, p in zip(runs["heartbeat"], runs["progress"], strict=True)
        )
        if all(server_us(r) for rs in runs.values() for r in rs)
        else None
    )
    print()
    print(
        f"Download progress reports vs {baseline.name} "
        f"(h2load -c{cfg.connections} -m{cfg.streams}, {rounds} rounds)"
    )
    for key, result in best.items():
        print(f"  {key:<10} {result.rps:>8.0f} req/s (best round), server {server_us(result):.0f} us/call")
    if cpu_ratio is not None:
        print(f"  ratio progress / {baseline.name} by server CPU per call: {cpu_ratio:.2f} (CPU-normalized)")
    print(
        "  rounds (heartbeat / progress req/s): "
        + "; ".join(
            f"{h.rps:.0f} / {p.rps:.0f}" for h, p in zip(runs["heartbeat"], runs["progress"], strict=True)
        )
    )
    print(
        f"  postgres during {writes.requests} reports: table rows written {pg.table_rows_written}, "
        f"commits {pg.xact_commit}, tables {pg.tables or '{}'}"
    )
    for g in goals:
        value = g["value"]
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"  {g['status']:<4}  {g['goal']:<58} {shown}")
    print()
    return {
        "baseline_method": baseline.method,
        "notes": notes + baseline.notes,
        "ratio_median": ratio,
        "ratios": pairs,
        "cpu_normalized_ratio": cpu_ratio,
        "rounds": {k: [round(r.rps, 1) for r in rs] for k, rs in runs.items()},
        "cpu_us_per_call": {k: (r.cpu or {}).get("cpu_us_per_call") for k, r in best.items()},
        "pg_writes": {"calls": writes.requests, **pg.as_dict()},
        "goals": goals,
    }


if __name__ == "__main__":  # python -m scripts.bench.download_progress TARGET SOURCE_DIR
    print(asyncio.run(_publish(sys.argv[1], sys.argv[2])))
