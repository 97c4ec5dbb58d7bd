"""Bench case: the WebSocket relay holding 10,000 idle sockets through Envoy (SPEC §8).

One relay process (`python -m gateway`) behind BENCH_WS_EDGES private Envoy edges (2): each proxied socket
holds two of Envoy's file descriptors, and the hard open-file limit of this machine (20,000 per process)
caps one Envoy below 10,000 sockets. The sockets and the notifications come from two more processes, so
that neither the clients' nor the publisher's work runs on the loop that measures: the swarm
(`python -m scripts.ws_swarm`: BENCH_WS_SOCKETS sockets, 10,000, one user each, cheap sans-I/O clients)
and the publisher (`python -m scripts.bench.ws_publisher`). It reports:

  memory    the relay's RSS with every socket open and idle, and per socket over its RSS before them
  latency   BENCH_WS_RATE notifications per second (1,000) for BENCH_WS_SECONDS (10), each XADDed (as the
            outbox relay does) to the stream of one random user: the frame's receive time at that user's
            socket minus the time.time() the publisher stamped into it just before its XADD (one machine,
            one clock), p50 / p99 / max (goal: p99 <= 100 ms), and when the slow ones were sent; the
            baseline beside it is the same publisher to one stream read by a bare XREAD BLOCK loop in the
            swarm process (Redis and the two processes alone, no relay)
  cpu       CPU of the relay (per notification), the swarm, Redis and the edges over the publishing window,
            the machine's busy share and load average beside them
  loop      the relay's event-loop probe (gateway/loop_probe.py) over the publishing window: probe ticks
            late by 50 / 100 ms or more, the relay's own CPU in those stalls (near their length: its own
            work held the loop; far below: the machine gave it no CPU), garbage collections by generation
  close     every socket dropped at once (RST): time until the relay's connection count and its users'
            slots are back to zero (goal: both zero)

BENCH_WS_PROFILE=relay.svg (.json for speedscope, .txt for collapsed stacks) records the relay with py-spy
while it publishes. BENCH_WS_EDGES=0 connects the swarm to the relay directly.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from redis import Redis

from gateway.streams import connections_key
from scripts.bench.procs import (
    ROOT,
    CpuMeter,
    StartError,
    die_with_parent,
    envoy_ready,
    pick_port,
    port_open,
)
from server.core.config import Settings
from server.core.uow import notification_stream

GOAL_P99_MS = 100.0


def _knobs() -> dict:
    return {
        "sockets": int(os.environ.get("BENCH_WS_SOCKETS", "10000")),
        "edges": int(os.environ.get("BENCH_WS_EDGES", "2")),
        "rate": int(os.environ.get("BENCH_WS_RATE", "1000")),
        "seconds": float(os.environ.get("BENCH_WS_SECONDS", "10")),
    }


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmRSS:"))) * 1024


def _relay_metrics(metrics_port: int) -> dict[str, float]:
    """The relay's Prometheus samples, by name with labels (`ws_loop_lag_seconds_bucket{le="0.05"}`)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        match.group(1): float(match.group(2))
        for match in re.finditer(r"^(\w+(?:\{[^}]*\})?) (\S+)$", text, re.MULTILINE)
    }


def _relay_connections(metrics_port: int) -> int:
    return int(_relay_metrics(metrics_port).get("ws_connections", -1))


def _loop_report(before: dict[str, float], after: dict[str, float], seconds: float) -> dict:
    """The relay's loop over the publishing window (gateway/loop_probe.py): ticks late by 50 / 100 ms or
    more, the CPU the relay used in those stalls against their length, and the collector's pauses."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    ticks = delta("ws_loop_lag_seconds_count")
    under = {le: delta(f'ws_loop_lag_seconds_bucket{{le="{le}"}}') for le in ("0.02", "0.05", "0.1")}
    gc = {
        f"gen{g}": {
            "count": int(delta(f'ws_gc_pause_seconds_count{{generation="{g}"}}')),
            "ms": round(delta(f'ws_gc_pause_seconds_sum{{generation="{g}"}}') * 1000, 1),
            "over_50ms": int(
                delta(f'ws_gc_pause_seconds_count{{generation="{g}"}}')
                - delta(f'ws_gc_pause_seconds_bucket{{generation="{g}",le="0.05"}}')
            ),
        }
        for g in range(3)
    }
    return {
        "ticks": int(ticks),
        "lag_over_20ms": int(ticks - under["0.02"]),
        "lag_over_50ms": int(ticks - under["0.05"]),
        "lag_over_100ms": int(ticks - under["0.1"]),
        "lag_sum_ms": round(delta("ws_loop_lag_seconds_sum") * 1000, 1),
        "stall_cpu_ms": round(delta("ws_loop_stall_cpu_seconds_total") * 1000, 1),
        "gc": gc,
        "seconds": seconds,
    }


def _start(bench, knobs: dict) -> tuple[int, list[int]]:
    """The relay and its edges; returns (relay metrics port, edge ports)."""
    taken: set[int] = set()
    ws_port, metrics_port = pick_port(8795, taken), pick_port(9495, taken)
    taken |= {ws_port, metrics_port}
    env = {"WS_PORT": str(ws_port), "WS_METRICS_PORT": str(metrics_port), "LOG_LEVEL": bench.cfg.log_level}
    bench.procs.start("relay", [sys.executable, "-m", "gateway"], env)
    bench.procs.wait_ready("relay", lambda: port_open(ws_port))
    edges = []
    for n in range(knobs["edges"]):
        port, admin = pick_port(8096 + n, taken), pick_port(9916 + n, taken)
        taken |= {port, admin}
        config = bench.work / f"envoy-ws-{n}.yaml"
        render = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "render-envoy.py"), "-o", str(config)],
            env={
                **os.environ,
                "ENVOY_PORT": str(port),
                "ENVOY_ADMIN_PORT": str(admin),
                "GATEWAY_UPSTREAMS": f"127.0.0.1:{ws_port}",
                "ENVOY_ACCESS_LOG": "0",
            },
            capture_output=True,
            text=True,
            check=False,
        )
        if render.returncode != 0:
            raise StartError(f"render-envoy.py failed: {render.stderr.strip()}")
        envoy = str(ROOT / ".venv" / "bin" / "envoy")
        base_id = 50000 + (os.getpid() % 1000) * 10 + n
        cmd = [
            envoy,
            "-c",
            str(config),
            "--base-id",
            str(base_id),
            "--concurrency",
            "1",
            "--log-level",
            "warn",
        ]
        bench.procs.start(f"envoy-ws-{n}", cmd)
        bench.procs.wait_ready(f"envoy-ws-{n}", lambda a=admin: envoy_ready(a))
        edges.append(port)
    return metrics_port, edges or [ws_port]  # BENCH_WS_EDGES=0: the sockets go to the relay directly


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(frames: list[list[float]]) -> dict:
    """p50 / p99 / max in ms of (sent at, latency) frames."""
    latencies = [latency for _, latency in frames]
    if not latencies:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
    }


def _slow_seconds(frames: list[list[float]], over_ms: float) -> list[float]:
    """When (seconds into the run) the frames slower than `over_ms` were sent: shows whether the tail is
    spread out or comes in bursts (a stall of the relay's loop delays everything in flight at once)."""
    if not frames:
        return []
    first = min(sent for sent, _ in frames)
    return sorted(round(sent - first, 2) for sent, latency in frames if latency * 1000 > over_ms)


class _Swarm:
    """scripts/ws_swarm.py as a process of its own: its sockets, driven by one-line commands."""

    def __init__(self, bench, users_file: Path, edges: list[int]):
        log_path = bench.procs.log_dir / "ws-swarm.log"
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "scripts.ws_swarm"),
                    *("--users", str(users_file), "--ports", ",".join(map(str, edges))),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
                text=True,
                preexec_fn=die_with_parent,
            )
        self.log_path = log_path

    def reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the swarm exited ({self.proc.wait()}): see {self.log_path}")
        return json.loads(line)

    def command(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _publish(args: list[str]) -> dict:
    """Runs the publisher process (scripts/bench/ws_publisher.py) to its end; its report."""
    out = subprocess.run(
        [sys.executable, "-m", "scripts.bench.ws_publisher", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=die_with_parent,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the publisher failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


def _slots(redis: Redis, users: list[str]) -> int:
    with redis.pipeline(transaction=False) as pipe:
        for user in users:
            pipe.zcard(connections_key(user))
        return sum(pipe.execute())


def _profile(pid: int, seconds: float) -> subprocess.Popen | None:
    """py-spy on the relay for the publishing window, when BENCH_WS_PROFILE names the output (.svg for a
    flame graph, .json for speedscope, .txt for collapsed stacks)."""
    out = os.environ.get("BENCH_WS_PROFILE")
    if not out:
        return None
    fmt = {".json": "speedscope", ".txt": "raw"}.get(Path(out).suffix, "flamegraph")
    return subprocess.Popen(
        [
            *(str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid", str(pid)),
            *("--duration", str(int(seconds)), "--rate", "250", "--format", fmt, "--output", out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _measure(bench, knobs: dict, relay_pid: int, metrics_port: int, edges: list[int]) -> dict:
    redis = Redis.from_url(Settings.from_env().redis_url)
    sockets_n, rate, seconds = knobs["sockets"], knobs["rate"], knobs["seconds"]
    users = [str(uuid.uuid4()) for _ in range(sockets_n)]
    users_file = bench.work / "ws-users.txt"
    users_file.write_text("\n".join(users) + "\n")
    rss_before = _rss(relay_pid)
    swarm = _Swarm(bench, users_file, edges)
    try:
        opened = swarm.reply()
        print(
            f"  opened {opened['sockets']} sockets through {len(edges)} Envoy edges in "
            f"{opened['open_seconds']:.1f} s (swarm process {swarm.proc.pid})",
            flush=True,
        )
        deadline = time.monotonic() + 120
        while _relay_connections(metrics_port) != sockets_n:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the relay holds {_relay_connections(metrics_port)} of {sockets_n} sockets"
                )
            time.sleep(0.2)
        time.sleep(2)  # idle
        rss_open = _rss(relay_pid)
        total = int(rate * seconds)
        pids = {"relay": relay_pid, "swarm": swarm.proc.pid, "redis": bench.redis_pid}
        pids.update({f"envoy-ws-{n}": bench.procs.pid(f"envoy-ws-{n}") for n in range(knobs["edges"])})
        meter = CpuMeter({name: pid for name, pid in pids.items() if pid})
        load_before = os.getloadavg()
        profiler = _profile(relay_pid, seconds)
        loop_before = _relay_metrics(metrics_port)
        meter.start()
        published = _publish(["--users", str(users_file), "--rate", str(rate), "--seconds", str(seconds)])
        swarm.command(f"collect {total} 30")
        frames = swarm.reply()["frames"]
        meter.stop()
        cpu = meter.report(total)
        loop = _loop_report(loop_before, _relay_metrics(metrics_port), seconds)
        if profiler is not None:
            profiler.wait()
        load_after = os.getloadavg()
        # the baseline: the same publisher to one fresh stream, read by a bare XREAD BLOCK loop in the swarm
        # process (Redis and the two processes' loops alone, no relay)
        lone = str(uuid.uuid4())
        swarm.command(f"baseline {lone} {total} 30")
        _publish(["--user", lone, "--rate", str(rate), "--seconds", str(seconds)])
        baseline = swarm.reply()["frames"]
        redis.delete(notification_stream(lone))

        started = time.perf_counter()
        swarm.command("abort")
        swarm.reply()
    finally:
        swarm.stop()
    while True:
        connections, slots = _relay_connections(metrics_port), _slots(redis, users)
        if (connections == 0 and slots == 0) or time.perf_counter() - started > 120:
            break
        time.sleep(0.2)
    close_seconds = time.perf_counter() - started
    with redis.pipeline(transaction=False) as pipe:
        for user in users:
            pipe.delete(notification_stream(user))
        pipe.execute()
    redis.close()
    relay = _summary(frames)
    return {
        "sockets": sockets_n,
        "edges": len(edges),
        "open_seconds": opened["open_seconds"],
        "relay_rss_mib_before": round(rss_before / 2**20, 1),
        "relay_rss_mib_open": round(rss_open / 2**20, 1),
        "relay_kib_per_socket": round((rss_open - rss_before) / sockets_n / 1024, 1),
        "notifications": total,
        "published": published,
        "delivered": len(frames),
        **relay,
        "slow_frames_sent_at_s": _slow_seconds(frames, GOAL_P99_MS)[:200],
        **{f"baseline_{key}": value for key, value in _summary(baseline).items()},
        "cpu": cpu,
        "relay_cpu_us_per_notification": cpu.get("cpu_us_per_call", {}).get("relay"),
        "relay_loop": loop,
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in load_after],
        "close_seconds": round(close_seconds, 1),
        "connections_after_close": connections,
        "slots_after_close": slots,
    }


def run(bench) -> dict:
    """Runs the case with its own relay and edges; prints its lines; returns the results."""
    knobs = _knobs()
    print(f"bench: WebSocket relay, {knobs['sockets']} idle sockets through Envoy", flush=True)
    try:
        metrics_port, edges = _start(bench, knobs)
        result = _measure(bench, knobs, bench.procs.pid("relay"), metrics_port, edges)
    finally:
        for n in range(knobs["edges"]):
            bench.procs.stop(f"envoy-ws-{n}")
        bench.procs.stop("relay")
    p99 = result["p99_ms"]
    all_delivered = result["delivered"] == result["notifications"]
    leftover = result["connections_after_close"] + result["slots_after_close"]
    goals = [
        {
            "goal": f"WS p99 at {knobs['rate']}/s, {knobs['sockets']} sockets <= {GOAL_P99_MS:g} ms",
            "value": p99,
            "status": "PASS" if p99 is not None and p99 <= GOAL_P99_MS and all_delivered else "MISS",
        },
        {
            "goal": "WS mass close: relay connections and slots back to 0",
            "value": leftover,
            "status": "PASS" if leftover == 0 else "MISS",
        },
    ]
    print()
    print("WebSocket relay")
    r = result
    print(
        f"  memory     relay RSS {r['relay_rss_mib_open']:.0f} MiB with {r['sockets']} idle sockets "
        f"({r['relay_kib_per_socket']:.1f} KiB per socket over {r['relay_rss_mib_before']:.0f} MiB)"
    )
    print(
        f"  latency    p50 {r['p50_ms']} ms, p99 {p99} ms, max {r['max_ms']} ms "
        f"({r['delivered']}/{r['notifications']} delivered; published at {r['published']['rate']}/s); "
        f"bare XREAD baseline p50 {r['baseline_p50_ms']} ms, p99 {r['baseline_p99_ms']} ms, "
        f"max {r['baseline_max_ms']} ms"
    )
    cores = r["cpu"].get("cores_used", {})
    print(
        f"  cpu        relay {r['relay_cpu_us_per_notification']} µs per notification "
        f"({cores.get('relay')} cores), swarm {cores.get('swarm')}, redis {cores.get('redis')}, "
        f"edges {[v for k, v in cores.items() if k.startswith('envoy')]}; "
        f"machine {r['cpu'].get('machine_busy', 0) * 100:.0f}% busy, load {r['loadavg_before'][0]} → "
        f"{r['loadavg_after'][0]}"
    )
    loop = r["relay_loop"]
    gc = ", ".join(
        f"{gen} {v['count']} x {v['ms']} ms ({v['over_50ms']} over 50 ms)" for gen, v in loop["gc"].items()
    )
    print(
        f"  loop       relay loop late by ≥ 50 ms {loop['lag_over_50ms']} times (≥ 100 ms "
        f"{loop['lag_over_100ms']}) of {loop['ticks']} probe ticks, relay CPU in those stalls "
        f"{loop['stall_cpu_ms']} ms; gc {gc}"
    )
    print(f"  close      all dropped at once: back to zero in {result['close_seconds']} s")
    for goal in goals:
        print(f"  {goal['status']:<4}  {goal['goal']:<62} {goal['value']}")
    print()
    return {**result, "goals": goals}


if __name__ == "__main__":  # this case alone: python -m scripts.bench.websocket (after stack-up)
    from scripts.bench.__main__ import Bench, Config

    _bench = Bench(Config())
    try:
        print(json.dumps(run(_bench), indent=2))
    finally:
        _bench.procs.stop_all()
