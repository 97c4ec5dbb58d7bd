"""Retention (SPEC §7) on the private outbox world's database, with a controlled clock: sent outbox rows,
processed events, request replays and applied orders older than their periods are deleted in small
batches; newer rows, pending outbox rows and dead letters stay."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from server.core.config import Settings
from server.core.retention import RetentionJob, event_retention_rules
from server.library.retention import library_retention_rules

# The job's clock, fixed: now, so that only this test's rows (dated long before it) are old, not those
# other tests leave in the shared world's database.
NOW = datetime.now(UTC)
DAY = timedelta(days=1)


async def test_rows_older_than_their_period_are_pruned_in_batches(world):
    settings = Settings(
        outbox_retention_seconds=2 * 86400,
        processed_events_retention_seconds=10 * 86400,
        request_replays_retention_seconds=3 * 86400,
        applied_orders_retention_seconds=30 * 86400,
    )
    job = RetentionJob(
        world.uow(),
        [*event_retention_rules(settings), *library_retention_rules(settings)],
        lambda: NOW,
        batch_size=7,
    )
    tag = uuid.uuid4().hex
    kept, old = NOW - DAY, NOW - 40 * DAY
    async with world.engine.begin() as conn:
        for i, (published, created) in enumerate(
            [(old, old)] * 20 + [(kept, old), (None, old)]  # sent long ago; sent yesterday; still pending
        ):
            await conn.execute(
                text(
                    "INSERT INTO outbox (id, channel, topic, key, payload, created_at, published_at)"
                    " VALUES (:id, 'kafka', 't', :key, '{}', :created, :published)"
                ),
                {"id": uuid.uuid4(), "key": f"{tag}-{i}", "created": created, "published": published},
            )
        for when, count in ((old, 15), (kept, 1)):
            for _ in range(count):
                await conn.execute(
                    text(
                        "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES (:c, :e, :t)"
                    ),
                    {"c": tag, "e": uuid.uuid4().hex, "t": when},
                )
                await conn.execute(
                    text(
                        "INSERT INTO request_replays (caller, method, request_id, created_at)"
                        " VALUES (:c, 'M', :r, :t)"
                    ),
                    {"c": tag, "r": uuid.uuid4(), "t": when},
                )
                await conn.execute(
                    text(
                        "INSERT INTO library_applied_orders (order_id, user_id, applied_at)"
                        " VALUES (:o, :u, :t)"
                    ),
                    {"o": f"{tag}-{uuid.uuid4().hex}", "u": uuid.uuid4(), "t": when},
                )

    deleted = await job.prune(NOW)

    async with world.engine.connect() as conn:
        left = {
            "outbox": await conn.scalar(
                text("SELECT count(*) FROM outbox WHERE key LIKE :t"), {"t": f"{tag}-%"}
            ),
            "pending": await conn.scalar(
                text("SELECT count(*) FROM outbox WHERE key LIKE :t AND published_at IS NULL"),
                {"t": f"{tag}-%"},
            ),
            "processed_events": await conn.scalar(
                text("SELECT count(*) FROM processed_events WHERE consumer = :t"), {"t": tag}
            ),
            "request_replays": await conn.scalar(
                text("SELECT count(*) FROM request_replays WHERE caller = :t"), {"t": tag}
            ),
            "library_applied_orders": await conn.scalar(
                text("SELECT count(*) FROM library_applied_orders WHERE order_id LIKE :t"), {"t": f"{tag}-%"}
            ),
        }
    assert left == {
        "outbox": 2,  # the one sent yesterday and the pending one
        "pending": 1,
        "processed_events": 1,
        "request_replays": 1,
        "library_applied_orders": 1,
    }
    # More rows than one batch (7) were deleted: the job went on batch after batch.
    assert deleted["outbox"] >= 20 and deleted["processed_events"] >= 15
    assert await job.prune(NOW) == dict.fromkeys(deleted, 0), "a second pass finds nothing more"
