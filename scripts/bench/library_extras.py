"""Bench cases of the library extras (issue 12), each against a baseline measured in the same run.

offline 100   RecordOfflineSessions with 100 sessions of one owned product (gRPC, one service process),
              vs the bare SQL the call cannot avoid: one transaction inserting the 100 session rows and
              their 100 credited intervals and updating the library item, through psycopg. Median over
              BENCH_OFFLINE_CALLS calls (20) of each, every call a fresh user; ratio service / bare.
sale fan-out  a catalog product event with a discount for a product BENCH_SALE_WISHERS users (20,000) wish
              for: the time from the event reaching Kafka to the last batch of `wishlistGameOnSale`
              notifications committed to the outbox, as wishers per second, vs one bare INSERT … SELECT of
              as many outbox rows (the rows the fan-out has to write, in one giant transaction).

Run alone: `python -m scripts.bench.library_extras` (after stack-up and migrate, environment as for
`make bench`); `make bench` runs it after the other cases.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
from aiokafka import AIOKafkaProducer
from google.protobuf.timestamp_pb2 import Timestamp

from library.v1 import playtime_service_pb2 as ppb
from library.v1 import playtime_service_pb2_grpc
from scripts.bench import fixtures
from scripts.devtokens import mint
from server.core.config import Settings
from server.core.events.cloudevents import CATALOG_EVENTS_TOPIC, make_cloud_event

OFFLINE_SESSIONS = 100


def _ts(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _intervals(now: datetime) -> list[tuple[datetime, datetime]]:
    """100 half-hour sessions two hours apart, the last ending an hour ago (all within 10 days)."""
    return [
        (now - timedelta(hours=1 + 2 * i, minutes=30), now - timedelta(hours=1 + 2 * i))
        for i in range(OFFLINE_SESSIONS)
    ]


async def _own(db: psycopg.AsyncConnection, user_id: uuid.UUID, product_id: uuid.UUID, now: datetime) -> None:
    """The user owns the product since 20 days (acquired before every uploaded session)."""
    await db.execute(
        "INSERT INTO library_items (id, user_id, product_id, acquisition_type, acquisition_timestamp) "
        "VALUES (%s, %s, %s, 'purchase', %s)",
        (uuid.uuid4(), user_id, product_id, now - timedelta(days=20)),
    )


async def _rpc_call(stub, product_id: uuid.UUID, user_id: uuid.UUID, now: datetime) -> float:
    request = ppb.RecordOfflineSessionsRequest(
        sessions=[
            ppb.OfflineSession(
                client_session_id=str(uuid.uuid4()),
                product_id=str(product_id),
                device_id="bench-offline",
                start_time=_ts(start),
                end_time=_ts(end),
            )
            for start, end in _intervals(now)
        ]
    )
    md = (("authorization", f"Bearer {mint(str(user_id), ttl=600)}"),)
    started = time.perf_counter()
    response = await stub.RecordOfflineSessions(request, metadata=md)
    elapsed = time.perf_counter() - started
    accepted = sum(r.outcome == ppb.OfflineSessionResult.ACCEPTED for r in response.results)
    if accepted != OFFLINE_SESSIONS:
        raise RuntimeError(f"RecordOfflineSessions accepted {accepted} of {OFFLINE_SESSIONS} sessions")
    return elapsed


async def _bare_call(db: psycopg.AsyncConnection, product_id: uuid.UUID, user_id: uuid.UUID, now: datetime):
    sessions = [(uuid.uuid4(), uuid.uuid4(), start, end) for start, end in _intervals(now)]
    started = time.perf_counter()
    async with db.transaction(), db.cursor() as cur:
        await cur.executemany(
            "INSERT INTO playtime_sessions (id, user_id, product_id, device_id, client_session_id, source, "
            "status, started_at, last_heartbeat_at, ended_at, credited_seconds) "
            "VALUES (%s, %s, %s, 'bench-bare', %s, 'offline', 'ended', %s, %s, %s, 1800)",
            [(sid, user_id, product_id, cid, s, e, e) for sid, cid, s, e in sessions],
        )
        await cur.executemany(
            "INSERT INTO playtime_intervals (session_id, user_id, product_id, device_id, started_at, "
            "ended_at) VALUES (%s, %s, %s, 'bench-bare', %s, %s)",
            [(sid, user_id, product_id, s, e) for sid, _, s, e in sessions],
        )
        await cur.execute(
            "UPDATE library_items SET total_playtime_seconds = %s, last_played_timestamp = %s "
            "WHERE user_id = %s AND product_id = %s",
            (OFFLINE_SESSIONS * 1800, sessions[0][3], user_id, product_id),
        )
    return time.perf_counter() - started


async def _offline(target: str, url: str, calls: int) -> dict:
    product_id = uuid.uuid5(uuid.NAMESPACE_URL, "https://library.platform/bench/offline-product")
    rpc, bare = [], []
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as db,
        grpc.aio.insecure_channel(target) as channel,
    ):
        stub = playtime_service_pb2_grpc.PlaytimeTrackerServiceStub(channel)
        for i in range(calls + 1):  # the first pair warms connections and caches up
            now = datetime.now(UTC)
            users = uuid.uuid4(), uuid.uuid4()
            for user in users:
                await _own(db, user, product_id, now)
            first, second = (
                _rpc_call(stub, product_id, users[0], now),
                _bare_call(db, product_id, users[1], now),
            )
            if i % 2:
                b, r = await second, await first
            else:
                r, b = await first, await second
            if i:
                rpc.append(r)
                bare.append(b)
    return {
        "rpc_ms": statistics.median(rpc) * 1000,
        "bare_ms": statistics.median(bare) * 1000,
        "ratio": statistics.median(r / b for r, b in zip(rpc, bare, strict=True)),
        "calls": calls,
    }


async def _bare_outbox(db: psycopg.AsyncConnection, wishers: int) -> float:
    """Seconds for one INSERT … SELECT of `wishers` notification rows (marked sent: the relay skips them),
    deleted again afterwards."""
    topic = f"bench-bare-{uuid.uuid4()}"
    started = time.perf_counter()
    async with db.transaction():
        await db.execute(
            "INSERT INTO outbox (id, channel, topic, key, payload, published_at) SELECT gen_random_uuid(), "
            "'notification', %s, gen_random_uuid()::text, %s::jsonb, now() FROM generate_series(1, %s)",
            (
                topic,
                json.dumps({"type": "wishlistGameOnSale", "payload": {"discountPercent": "30%"}}),
                wishers,
            ),
        )
    elapsed = time.perf_counter() - started
    await db.execute("DELETE FROM outbox WHERE topic = %s", (topic,))
    return elapsed


async def _sale(url: str, bootstrap: str, wishers: int) -> dict:
    product = uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        await db.execute(
            "INSERT INTO wishlist_items (id, user_id, product_id) "
            "SELECT gen_random_uuid(), gen_random_uuid(), %s FROM generate_series(1, %s)",
            (product, wishers),
        )
        event = make_cloud_event(
            event_type="com.platform.catalog.product.updated.v1",
            source="/bench",
            subject=str(product),
            data={"productId": str(product), "name": "Bench Sale", "discount": {"percent": 30}},
        )
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            published = time.perf_counter()
            await producer.send_and_wait(
                CATALOG_EVENTS_TOPIC, json.dumps(event).encode(), key=str(product).encode()
            )
        finally:
            await producer.stop()
        deadline = published + 600
        while True:
            cur = await db.execute(
                "SELECT extract(epoch FROM finished_at - created_at), notified, batches FROM wishlist_sales "
                "WHERE product_id = %s AND finished_at IS NOT NULL",
                (product,),
            )
            row = await cur.fetchone()
            if row is not None:
                break
            if time.perf_counter() > deadline:
                raise RuntimeError("the sale fan-out did not finish within 600 s")
            await asyncio.sleep(0.05)
        end_to_end = time.perf_counter() - published
        fan_out, notified, batches = float(row[0]), row[1], row[2]
        if notified != wishers:
            raise RuntimeError(f"the sale reached {notified} of {wishers} wishers")
        bare = await _bare_outbox(db, wishers)
        await db.execute("DELETE FROM wishlist_items WHERE product_id = %s", (product,))
    return {
        "wishers": wishers,
        "batches": batches,
        "fan_out_seconds": fan_out,
        "end_to_end_seconds": end_to_end,
        "wishers_per_second": wishers / fan_out,
        "bare_insert_seconds": bare,
        "bare_rows_per_second": wishers / bare,
        "ratio": (wishers / fan_out) / (wishers / bare),
    }


def run(bench) -> dict:
    """Runs the cases against one service process; prints their lines; returns the results."""
    calls = int(os.environ.get("BENCH_OFFLINE_CALLS", "20"))
    wishers = int(os.environ.get("BENCH_SALE_WISHERS", "20000"))
    settings = Settings.from_env()
    url = fixtures.libpq_url(settings.database_url)
    print("bench: library extras (RecordOfflineSessions x100 vs bare SQL; a sale's fan-out)", flush=True)
    target = bench.start_service(0, workers=True)
    try:
        offline = asyncio.run(_offline(target, url, calls))
        sale = asyncio.run(_sale(url, settings.kafka_bootstrap_servers, wishers))
    finally:
        bench.procs.stop("server-1")
    print()
    print("Library extras")
    print(
        f"  offline x{OFFLINE_SESSIONS}      {offline['rpc_ms']:.1f} ms per call vs bare SQL "
        f"{offline['bare_ms']:.1f} ms (medians of {calls}): {offline['ratio']:.2f}x"
    )
    print(
        f"  sale fan-out      {sale['wishers_per_second']:,.0f} wishers/s ({sale['wishers']:,} in "
        f"{sale['batches']} transactions, {sale['fan_out_seconds']:.2f} s; event to last batch "
        f"{sale['end_to_end_seconds']:.2f} s) vs one bare INSERT of as many outbox rows "
        f"{sale['bare_rows_per_second']:,.0f} rows/s: {sale['ratio']:.2f}x"
    )
    print()
    return {"offline_100": offline, "sale_fan_out": sale}


if __name__ == "__main__":
    from scripts.bench.__main__ import Bench, Config

    _bench = Bench(Config())
    try:
        print(json.dumps(run(_bench), indent=2))
    finally:
        _bench.procs.stop_all()
