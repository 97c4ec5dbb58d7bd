"""Bench case: the heartbeat against a Redis Cluster (SPEC §10: native gRPC heartbeat >= 0.5x the bare
grpc.aio echo), beside the same heartbeat against the stack's single Redis, in the same rounds.

A private cluster of three masters (redis-server --cluster-enabled, the stack's flags, no persistence) on
free ports, formed with `redis-cli --cluster create`, and two service processes with WORKERS_ENABLED=0
(no reaper or checkpoint beside the calls): `server-single` on the stack's Redis, `server-cluster` with
REDIS_MODE=cluster on the private cluster. Each has an active play session of the bench user (started
through it, so its live state is in its own Redis). BENCH_CLUSTER_ROUNDS rounds (3) of: echo, the
single-Redis heartbeat, the cluster heartbeat (h2load, the bench's clients, streams, duration and
warm-up); ratios are medians of the within-round ratios, and CPU per call is read for each server and for
its Redis (the three masters together for the cluster).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc

from scripts.bench import fixtures, loadgen
from scripts.bench.procs import CpuMeter, pick_port, port_open

GOAL_VS_ECHO = 0.5
NODES = 3


def _start_cluster(bench, directory: Path, taken: set[int]) -> tuple[str, list[str]]:
    """Three masters formed into a cluster; (the URL of the first, their process names)."""
    names, addresses = [], []
    for n in range(NODES):
        port, bus = pick_port(17400 + n, taken), pick_port(27400 + n, taken)
        name = f"redis-cluster-{n + 1}"
        flags = {"bind": "127.0.0.1", "port": port, "cluster-port": bus, "dir": directory, "save": ""}
        flags |= {"cluster-enabled": "yes", "cluster-config-file": f"nodes-{port}.conf", "appendonly": "no"}
        flags["notify-keyspace-events"] = "Kt"
        bench.procs.start(name, ["redis-server", *(x for k, v in flags.items() for x in (f"--{k}", str(v)))])
        bench.procs.wait_ready(name, lambda port=port: port_open(port))
        names.append(name)
        addresses.append(f"127.0.0.1:{port}")
    subprocess.run(
        ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    for address in addresses:
        port = address.rsplit(":", 1)[1]

        def ok(port=port) -> bool:
            info = subprocess.run(
                ["redis-cli", "-p", port, "cluster", "info"], capture_output=True, text=True
            )
            return "cluster_state:ok" in info.stdout

        bench.procs.wait_ready(names[0], ok)
    return f"redis://{addresses[0]}/0", names


def _start_service(bench, name: str, index: int, **env: str) -> str:
    """`python -m server` on the bench's index-th ports, workers off, with `env` on top."""
    port, metrics = bench.cfg.grpc_ports[index], bench.cfg.metrics_ports[index]
    env |= {"GRPC_PORT": str(port), "METRICS_PORT": str(metrics), "WORKERS_ENABLED": "0"}
    bench.procs.start(name, [sys.executable, "-m", "server"], {**bench.service_env(), **env})
    target = f"127.0.0.1:{port}"
    bench.procs.wait_ready(name, lambda: fixtures.wait_serving(target))
    print(
        f"bench: {name}: python -m server on {target} ({env.get('REDIS_MODE', 'single')} Redis)", flush=True
    )
    return target


def run(bench) -> dict:
    """Runs the case with the Bench's processes, knobs and load generator; prints its lines; returns the
    results for latest.json."""
    cfg = bench.cfg
    rounds = int(os.environ.get("BENCH_CLUSTER_ROUNDS", "3"))
    taken = {cfg.echo_port, *cfg.grpc_ports, *cfg.metrics_ports, cfg.envoy_port, cfg.envoy_admin_port}
    with tempfile.TemporaryDirectory(prefix="bench-redis-cluster-") as directory:
        url, nodes = _start_cluster(bench, Path(directory), taken)
        try:
            return _measure(bench, rounds, url, nodes)
        finally:
            for name in ("echo", "server-single", "server-cluster", *nodes):
                bench.procs.stop(name)


def _measure(bench, rounds: int, url: str, nodes: list[str]) -> dict:
    cfg = bench.cfg
    token = fixtures.user_token()
    targets = {
        "single": _start_service(bench, "server-single", 0),
        "cluster": _start_service(bench, "server-cluster", 1, REDIS_MODE="cluster", REDIS_URL=url),
    }
    bodies, method = {}, fixtures.HEARTBEAT
    for kind, target in targets.items():
        choice = fixtures.choose_rpc(target)
        if not choice.is_heartbeat:
            raise RuntimeError(f"heartbeats against the {kind} Redis do not work: {choice.notes}")
        bodies[kind] = bench.work / f"cluster-case-{kind}.bin"
        bodies[kind].write_bytes(loadgen.grpc_frame(choice.message))
        code, details = fixtures.raw_call(target, method, choice.message, token)
        if code != grpc.StatusCode.OK:
            raise RuntimeError(f"heartbeat through server-{kind} answered {code.name}: {details}")
    bench.procs.start(
        "echo", [sys.executable, str(Path(__file__).parent / "echo_server.py"), "--port", str(cfg.echo_port)]
    )
    bench.procs.wait_ready("echo", lambda: port_open(cfg.echo_port))
    bodies["echo"] = bodies["single"]  # the same request bytes (the echo ignores them)
    redis_pids = {
        "single": {"redis": bench.redis_pid} if bench.redis_pid else {},
        "cluster": {name: bench.procs.pid(name) for name in nodes},
        "echo": {},
    }
    process = {"echo": "echo", "single": "server-single", "cluster": "server-cluster"}
    paths = {"echo": ("127.0.0.1", cfg.echo_port, "/bench.Echo/Echo")}
    for kind, target in targets.items():
        host, port = target.rsplit(":", 1)
        paths[kind] = (host, int(port), method)
    runs: dict[str, list[loadgen.LoadResult]] = {kind: [] for kind in process}

    for n in range(1, rounds + 1):
        print(f"bench: redis cluster round {n}/{rounds}", flush=True)
        for kind in ("echo", "single", "cluster"):
            host, port, path = paths[kind]
            meter = CpuMeter({"server": bench.procs.pid(process[kind]), **redis_pids[kind]})
            result = loadgen.h2load(
                f"http://{host}:{port}{path}",
                bodies[kind],
                {"content-type": "application/grpc", "te": "trailers", "authorization": f"Bearer {token}"},
                clients=cfg.connections,
                streams=cfg.streams,
                log_file=bench.work / f"cluster-{kind}.h2load.log",
                target=f"{host}:{port}{path}",
                meter=meter,
                duration=cfg.duration,
                warmup=cfg.warmup,
            )
            result.cpu = meter.report(result.requests)
            (bench.work / f"cluster-{kind}.h2load.log").unlink(missing_ok=True)
            runs[kind].append(result)
            print(f"bench:   {kind}: {result.rps:.0f} req/s, {result.failures} failed", flush=True)
    codes = {kind: fixtures.handled_codes(cfg.metrics_ports[i], method) for i, kind in enumerate(targets)}
    return _report(bench, runs, codes)


def _cpu(result: loadgen.LoadResult, redis: bool) -> float:
    per = (result.cpu or {}).get("cpu_us_per_call", {})
    return sum(v for k, v in per.items() if (k != "server") == redis)


def _report(bench, runs: dict[str, list[loadgen.LoadResult]], codes: dict[str, dict[str, int]]) -> dict:
    def paired(a: str, b: str) -> float | None:
        pairs = [x.rps / y.rps for x, y in zip(runs[a], runs[b], strict=True) if y.rps]
        return statistics.median(pairs) if pairs else None

    def by_cpu(a: str, b: str) -> float | None:
        pairs = [
            _cpu(y, False) / _cpu(x, False) for x, y in zip(runs[a], runs[b], strict=True) if _cpu(x, False)
        ]
        return statistics.median(pairs) if pairs else None

    ratios = {
        "grpc_direct/echo (Redis Cluster)": paired("cluster", "echo"),
        "grpc_direct/echo (single Redis)": paired("single", "echo"),
        "cluster/single": paired("cluster", "single"),
        "grpc_direct/echo (Redis Cluster, server CPU)": by_cpu("cluster", "echo"),
        "grpc_direct/echo (single Redis, server CPU)": by_cpu("single", "echo"),
    }
    failures = sum(r.failures for kind in ("single", "cluster") for r in runs[kind])
    in_flight = {kind: sum(r.in_flight_at_end for r in runs[kind]) for kind in codes}
    not_ok = sum(fixtures.unexpected_calls(codes[kind], "OK", in_flight[kind]) for kind in codes)
    cluster_ratio = ratios["grpc_direct/echo (Redis Cluster)"]
    goals = [
        {
            "goal": f"heartbeat against a Redis Cluster / echo >= {GOAL_VS_ECHO}",
            "value": cluster_ratio,
            "status": "PASS" if (cluster_ratio or 0) >= GOAL_VS_ECHO else "MISS",
        },
        {
            "goal": "0 failed heartbeats, every one answered OK (both Redis kinds; h2load's cut-off aside)",
            "value": failures + not_ok,
            "status": "PASS" if failures + not_ok == 0 else "MISS",
        },
    ]
    cfg = bench.cfg
    print()
    print(f"Heartbeat against a Redis Cluster (3 masters) and a single Redis (h2load -c{cfg.connections} "
          f"-m{cfg.streams}, {len(runs['echo'])} rounds, workers off)")  # fmt: skip
    for kind, results in runs.items():
        best = max(results, key=lambda r: r.rps)
        medians = [statistics.median(_cpu(r, redis) for r in results) for redis in (False, True)]
        print(f"  {kind:<8} {best.rps:>8.0f} req/s (best round)  server {medians[0]:.0f} us/call"
              + (f", Redis {medians[1]:.0f} us/call" if kind != "echo" else ""))  # fmt: skip
    for name, value in ratios.items():
        print(f"  {name:<46} {value:.2f}" if value is not None else f"  {name:<46} -")
    for goal in goals:
        print(f"  [{goal['status']}] {goal['goal']}: {goal['value']}")
    print(f"  grpc-status of every heartbeat: {codes}")
    return {
        "rounds": {kind: [r.as_dict() for r in results] for kind, results in runs.items()},
        "grpc_codes": codes,
        "ratios": ratios,
        "goals": goals,
    }


if __name__ == "__main__":  # alone: python -m scripts.bench.redis_cluster (with the stack's environment)
    from scripts.bench.__main__ import Bench, Config

    _bench = Bench(Config())
    try:
        run(_bench)
    finally:
        _bench.procs.stop_all()
