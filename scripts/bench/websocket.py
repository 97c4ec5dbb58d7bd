"""Bench case: the WebSocket relay holding 10,000 idle sockets through Envoy (SPEC §8).

One relay process (`python -m gateway`) behind BENCH_WS_EDGES private Envoy edges (2): each proxied socket
holds two of Envoy's file descriptors, and the hard open-file limit of this machine (20,000 per process)
caps one Envoy below 10,000 sockets. The bench process opens BENCH_WS_SOCKETS sockets (10,000; one user
each; cheap sans-I/O clients, scripts/ws_swarm.py) and reports:

  memory    the relay's RSS with every socket open and idle, and per socket over its RSS before them
  latency   BENCH_WS_RATE notifications per second (1,000) for BENCH_WS_SECONDS (10), each XADDed (as the
            outbox relay does) to the stream of one random user: time from XADD to the frame at that
            user's socket, p50 / p99 (goal: p99 <= 100 ms); the baseline beside it is the same stream
            read by a bare XREAD BLOCK client in this process (Redis and the loop alone, no relay)
  close     every socket dropped at once (RST): time until the relay's connection count and its users'
            slots are back to zero (goal: both zero)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid

import uvloop
from redis.asyncio import Redis

from gateway.streams import connections_key
from scripts.bench.procs import ROOT, StartError, envoy_ready, pick_port, port_open
from scripts.devtokens import mint
from scripts.ws_swarm import SwarmSocket, open_all
from server.core.config import Settings
from server.core.redis import create_redis
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


def _relay_connections(metrics_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    match = re.search(r"^ws_connections (\S+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else -1


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
    return metrics_port, edges


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _publish(redis: Redis, users: list[str], rate: int, seconds: float) -> None:
    """XADDs at `rate` per second to random users; each entry carries its send time (perf_counter)."""
    loop = asyncio.get_running_loop()
    start, total = loop.time(), int(rate * seconds)
    pending: set[asyncio.Task] = set()
    for n in range(total):
        delay = start + n / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        payload = json.dumps({"t": time.perf_counter()})
        task = asyncio.create_task(
            redis.xadd(
                notification_stream(random.choice(users)), {"type": "achievementUnlocked", "payload": payload}
            )
        )
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)


async def _baseline(redis: Redis, rate: int, seconds: float) -> list[float]:
    """The same publishing, read back by one XREAD BLOCK loop on one stream: Redis and this loop alone."""
    user = str(uuid.uuid4())
    latencies: list[float] = []
    total = int(rate * seconds)

    async def read() -> None:
        cursor = "$"
        async with Redis(connection_pool=redis.connection_pool) as r:
            while len(latencies) < total:
                reply = await r.xread({notification_stream(user): cursor}, block=2000, count=100)
                for _, entries in reply:
                    for entry_id, fields in entries:
                        cursor = entry_id
                        latencies.append(time.perf_counter() - json.loads(fields[b"payload"])["t"])

    task = asyncio.create_task(read())
    await asyncio.sleep(0.2)
    await _publish(redis, [user], rate, seconds)
    await asyncio.wait_for(task, 30)
    await redis.delete(notification_stream(user))
    return latencies


async def _measure(knobs: dict, relay_pid: int, metrics_port: int, edges: list[int]) -> dict:
    settings = Settings.from_env()
    # blocking pool: 1,000 XADDs a second wait for a connection instead of failing "Too many connections"
    redis = create_redis(settings.redis_url, max_connections=64, timeout=30)
    sockets_n = knobs["sockets"]
    users = [str(uuid.uuid4()) for _ in range(sockets_n)]
    started = time.perf_counter()
    tokens = [mint(user) for user in users]
    print(f"  minted {sockets_n} tokens in {time.perf_counter() - started:.1f} s", flush=True)
    rss_before = _rss(relay_pid)
    latencies: list[float] = []

    def on_text(_index: int):
        def received(text: str) -> None:
            latencies.append(time.perf_counter() - json.loads(text)["payload"]["t"])

        return received

    started = time.perf_counter()
    sockets: list[SwarmSocket] = await open_all(
        [(edges[i % len(edges)], tokens[i]) for i in range(sockets_n)], on_text=on_text
    )
    open_seconds = time.perf_counter() - started
    print(
        f"  opened {sockets_n} sockets through {len(edges)} Envoy edges in {open_seconds:.1f} s", flush=True
    )
    deadline = time.monotonic() + 120
    while _relay_connections(metrics_port) != sockets_n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the relay holds {_relay_connections(metrics_port)} of {sockets_n} sockets")
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)  # idle
    rss_open = _rss(relay_pid)
    total = int(knobs["rate"] * knobs["seconds"])
    await _publish(redis, users, knobs["rate"], knobs["seconds"])
    deadline = time.monotonic() + 30
    while len(latencies) < total and time.monotonic() < deadline:  # noqa: ASYNC110 (callbacks append)
        await asyncio.sleep(0.05)
    delivered = len(latencies)
    relay_latencies = list(latencies)
    baseline = await _baseline(redis, knobs["rate"], knobs["seconds"])

    started = time.perf_counter()
    for socket in sockets:
        socket.abort()
    while True:
        connections = _relay_connections(metrics_port)
        async with redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.zcard(connections_key(user))
            slots = sum(await pipe.execute())
        if (connections == 0 and slots == 0) or time.perf_counter() - started > 120:
            break
        await asyncio.sleep(0.2)
    close_seconds = time.perf_counter() - started
    async with redis.pipeline(transaction=False) as pipe:
        for user in users:
            pipe.delete(notification_stream(user))
        await pipe.execute()
    await redis.aclose()
    return {
        "sockets": sockets_n,
        "edges": len(edges),
        "open_seconds": round(open_seconds, 1),
        "relay_rss_mib_before": round(rss_before / 2**20, 1),
        "relay_rss_mib_open": round(rss_open / 2**20, 1),
        "relay_kib_per_socket": round((rss_open - rss_before) / sockets_n / 1024, 1),
        "notifications": total,
        "delivered": delivered,
        "p50_ms": round(statistics.median(relay_latencies) * 1000, 2) if relay_latencies else None,
        "p99_ms": round(_percentile(relay_latencies, 0.99) * 1000, 2) if relay_latencies else None,
        "baseline_p50_ms": round(statistics.median(baseline) * 1000, 2),
        "baseline_p99_ms": round(_percentile(baseline, 0.99) * 1000, 2),
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
        result = uvloop.run(_measure(knobs, bench.procs.pid("relay"), metrics_port, edges))
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
        f"  latency    p50 {r['p50_ms']} ms, p99 {p99} ms ({r['delivered']}/{r['notifications']} delivered); "
        f"bare XREAD baseline p50 {r['baseline_p50_ms']} ms, p99 {r['baseline_p99_ms']} ms"
    )
    print(f"  close      all dropped at once: back to zero in {result['close_seconds']} s")
    for goal in goals:
        print(f"  {goal['status']:<4}  {goal['goal']:<62} {goal['value']}")
    print()
    return {**result, "goals": goals}
