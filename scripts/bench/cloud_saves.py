"""Bench case: cloud-save sync (SPEC §10), against a baseline measured in the same run.

sync 10 MiB   one save sync as the client makes it: RequestSaveGameUploadURL (gRPC) + the presigned PUT
              of the bytes (httpx) + ConfirmSaveGameUpload (the server heads the object for its size and
              SHA-256, then commits, with the event and notification in the outbox), vs a bare presigned
              PUT of the same bytes with the same headers and HTTP client to the same store. Throughput
              ratio bare / sync per round; goal: median >= 0.8. BENCH_SAVES_ROUNDS rounds (9), the two
              measured back to back in alternating order.
sync 100 KiB  the same for a 100 KiB file, BENCH_SAVES_SMALL_N syncs (30), each followed by its bare PUT:
              the median overhead of a sync over the bare PUT in milliseconds, the medians of its steps
              (upload URL RPC, PUT, confirm RPC) and the service's CPU per sync (reported, no goal).

One service process with WORKERS_ENABLED=1 (the relay publishes what the confirms emit, as in production).
The SHA-256 is computed once up front for both sides: hashing is the client's work either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import time
import uuid
from dataclasses import dataclass

import grpc
import httpx

from library.v1 import cloud_save_service_pb2 as pb
from library.v1 import cloud_save_service_pb2_grpc, library_service_pb2, library_service_pb2_grpc
from scripts.bench import fixtures
from scripts.bench.procs import CpuMeter
from server.core.config import Settings
from server.core.s3 import ObjectStore

GOAL_VS_BARE_PUT = 0.8
MiB = 1024 * 1024


@dataclass(frozen=True)
class _Steps:
    """Wall seconds of one sync's steps, as the client sees them."""

    upload_url: float
    put: float
    confirm: float

    @property
    def total(self) -> float:
        return self.upload_url + self.put + self.confirm


class _Sync:
    def __init__(self, target: str, store: ObjectStore, http: httpx.AsyncClient):
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = cloud_save_service_pb2_grpc.CloudSaveServiceStub(self._channel)
        self._md = (("authorization", f"Bearer {fixtures.user_token()}"),)
        self._store, self._http = store, http
        self._slot = f"bench {uuid.uuid4().hex[:8]}"
        # a product of this run's own: the quota is per user and product, and what earlier runs kept (up to
        # the retained versions of every slot they made) would fill it
        self.product_id = uuid.uuid4()
        self._head = 0
        self.bare_keys: list[str] = []

    async def grant(self) -> None:
        stub = library_service_pb2_grpc.LibraryServiceStub(self._channel)
        await stub.GrantEntitlements(
            library_service_pb2.GrantEntitlementsRequest(
                user_id=str(fixtures.BENCH_USER),
                items=[
                    library_service_pb2.EntitlementGrant(
                        product_id=str(self.product_id),
                        acquisition_type=library_service_pb2.LibraryItem.PURCHASE,
                    )
                ],
            ),
            metadata=(("authorization", f"Bearer {fixtures.service_token()}"),),
        )

    async def sync(self, body: bytes, sha256: str) -> _Steps:
        started = time.perf_counter()
        request = pb.RequestSaveGameUploadURLRequest(
            product_id=str(self.product_id),
            slot_name=self._slot,
            file_size_bytes=len(body),
            file_hash_sha256=sha256,
            base_version=self._head,
            device_id="bench",
        )
        request.client_modified_at.GetCurrentTime()
        ticket = await self._stub.RequestSaveGameUploadURL(request, metadata=self._md)
        requested = time.perf_counter()
        put = await self._http.put(ticket.upload_url, content=body, headers=dict(ticket.required_headers))
        put.raise_for_status()
        uploaded = time.perf_counter()
        confirmed = await self._stub.ConfirmSaveGameUpload(
            pb.ConfirmSaveGameUploadRequest(savegame_id=ticket.savegame_id), metadata=self._md
        )
        confirmed_at = time.perf_counter()
        self._head = confirmed.save_game.version_number
        return _Steps(requested - started, uploaded - requested, confirmed_at - uploaded)

    async def bare_put(self, body: bytes, sha256: str) -> float:
        key = f"bench/bare/{uuid.uuid4()}"
        self.bare_keys.append(key)
        upload = self._store.presign_put(key, size=len(body), sha256_hex=sha256, expires_in=300)
        started = time.perf_counter()
        put = await self._http.put(upload.url, content=body, headers=upload.headers)
        elapsed = time.perf_counter() - started
        put.raise_for_status()
        return elapsed

    async def close(self) -> None:
        for key in self.bare_keys:
            await self._store.delete(key)
        await self._channel.close()


async def _measure(target: str, server_pid: int, rounds: int, small_n: int) -> dict:
    big, small = os.urandom(10 * MiB), os.urandom(100 * 1024)
    big_sha, small_sha = hashlib.sha256(big).hexdigest(), hashlib.sha256(small).hexdigest()
    async with ObjectStore(Settings.from_env()) as store, httpx.AsyncClient(timeout=60) as http:
        bench = _Sync(target, store, http)
        try:
            await bench.grant()
            await bench.sync(small, small_sha)  # warm-up: connections, caches
            await bench.bare_put(small, small_sha)
            ratios, syncs, bares = [], [], []
            for i in range(rounds):
                if i % 2:
                    bare = await bench.bare_put(big, big_sha)
                    sync = (await bench.sync(big, big_sha)).total
                else:
                    sync = (await bench.sync(big, big_sha)).total
                    bare = await bench.bare_put(big, big_sha)
                ratios.append(bare / sync)
                syncs.append(sync)
                bares.append(bare)
            overheads, steps, small_bares = [], [], []
            meter = CpuMeter({"server": server_pid})
            meter.start()
            for _ in range(small_n):
                step = await bench.sync(small, small_sha)
                bare = await bench.bare_put(small, small_sha)
                steps.append(step)
                small_bares.append(bare)
                overheads.append(step.total - bare)
            meter.stop()
        finally:
            await bench.close()
    cpu = meter.report(small_n)

    def median_ms(values) -> float:
        return statistics.median(values) * 1000

    return {
        "big_sync_seconds": statistics.median(syncs),
        "big_bare_put_seconds": statistics.median(bares),
        "big_ratios": ratios,
        "ratio": statistics.median(ratios),
        "small_overhead_ms": statistics.median(overheads) * 1000,
        "small_overheads_ms": [o * 1000 for o in overheads],
        "small_steps_ms": {
            "upload_url": median_ms([s.upload_url for s in steps]),
            "put": median_ms([s.put for s in steps]),
            "bare_put": median_ms(small_bares),
            "confirm": median_ms([s.confirm for s in steps]),
        },
        # the service's CPU over the small syncs (the bare PUTs beside them do not reach it)
        "small_server_cpu_ms_per_sync": cpu.get("cpu_us_per_call", {}).get("server", float("nan")) / 1000,
        "small_machine_busy": cpu.get("machine_busy"),
        "load_average": os.getloadavg(),
    }


def run(bench) -> dict:
    """Runs the cases against one service process; prints their lines; returns the results."""
    rounds = int(os.environ.get("BENCH_SAVES_ROUNDS", "9"))
    small_n = int(os.environ.get("BENCH_SAVES_SMALL_N", "30"))
    print("bench: cloud-save sync (upload URL + PUT + confirm) vs a bare presigned PUT", flush=True)
    target = bench.start_service(0, workers=True)
    try:
        result = asyncio.run(_measure(target, bench.procs.pid("server-1"), rounds, small_n))
    finally:
        bench.procs.stop("server-1")
    ratio = result["ratio"]
    goal = {
        "goal": f"save sync 10 MiB / bare S3 PUT (throughput) >= {GOAL_VS_BARE_PUT}",
        "value": ratio,
        "status": "PASS" if ratio >= GOAL_VS_BARE_PUT else "MISS",
    }
    print()
    print("Cloud saves")
    print(
        f"  sync 10 MiB       {result['big_sync_seconds'] * 1000:.0f} ms vs bare PUT "
        f"{result['big_bare_put_seconds'] * 1000:.0f} ms (medians of {rounds} rounds)"
    )
    steps = result["small_steps_ms"]
    print(f"  sync 100 KiB      overhead over a bare PUT: {result['small_overhead_ms']:.1f} ms per sync")
    print(
        f"                    upload URL {steps['upload_url']:.1f} ms + PUT {steps['put']:.1f} ms (bare "
        f"{steps['bare_put']:.1f}) + confirm {steps['confirm']:.1f} ms; service CPU "
        f"{result['small_server_cpu_ms_per_sync']:.1f} ms per sync"
    )
    load = ", ".join(f"{v:.1f}" for v in result["load_average"])
    busy = result["small_machine_busy"]
    print(f"                    machine: load {load}, {busy:.0%} busy during the small syncs")
    print(f"  {goal['status']:<4}  {goal['goal']:<62} {ratio:.2f}")
    print()
    return {**result, "goals": [goal]}


if __name__ == "__main__":  # alone: python -m scripts.bench.cloud_saves (with the stack's environment)
    import json

    from scripts.bench.__main__ import Bench, Config

    _bench = Bench(Config())
    try:
        print(json.dumps(run(_bench), indent=2, default=str))
    finally:
        _bench.procs.stop_all()
