"""`scripts/restore --to T` where pgBackRest alone fails: T in the last second of the backup it needs (its
stop time counts whole seconds, so pgBackRest finds no backup "stopped before T"), and T before every backup.

A writer commits a tick every ~10 ms while a full backup runs. Each tick records the database clock and the
WAL insert position as it is written, so afterwards the drill knows which ticks committed after the backup's
end (their position is past the backup's stop LSN) and, for a tick j, that tick j-1 committed before j's
recorded time and j after it. T is taken just before such a tick j, after the backup's end and inside the
second pgBackRest records as the backup's stop: the restore must bring back ticks 1 .. j-1 exactly."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

import psycopg

from tests.recovery import drill

ATTEMPTS = 3  # a backup that ends in the last ~10 ms of its second leaves no tick there: take another


async def test_restore_to_a_time_in_the_backups_last_second_and_refusal_before_the_first_backup(capsys):
    with drill.superuser() as conn:
        conn.execute(
            "CREATE TABLE drill_ticks (n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " at timestamptz NOT NULL, lsn pg_lsn NOT NULL)"
        )
    for _ in range(ATTEMPTS):
        point = await _backup_with_a_tick_in_its_last_second()
        if point is not None:
            break
    else:
        raise AssertionError(f"{ATTEMPTS} backups in a row ended with no tick left in their last second")
    target, ticks_by_t, stop_second = point
    # the WAL holding the ticks after T reaches the archive (switched now: this drill is not about the RPO)
    with drill.superuser() as conn:
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    await drill.wait_archived(segment, timeout=60)

    # T before the first backup: refused before anything is touched, naming the earliest restorable time
    oldest_stop = datetime.fromtimestamp(drill.backups()[0]["timestamp"]["stop"], UTC)
    pid = (drill.PG_DATA / "postmaster.pid").read_text().split()[0]
    refused = drill.run_script("scripts/restore", "--to", _iso(oldest_stop - timedelta(seconds=1)), "--yes")
    assert refused.returncode == 2, refused
    assert "is before the end of the oldest backup" in refused.stderr
    assert f"earliest time this repository can restore to is {_iso(oldest_stop)[:19]}" in refused.stderr
    assert "Traceback" not in refused.stderr and "ERROR" not in refused.stderr
    assert (drill.PG_DATA / "postmaster.pid").read_text().split()[0] == pid  # still the same postmaster
    assert not (drill.PG_DATA.parent / "data.before-restore").exists()
    with drill.superuser() as conn:
        ticks_now = conn.execute("SELECT count(*) FROM drill_ticks").fetchone()[0]
    assert ticks_now > ticks_by_t

    # the disaster, then the restore to T, from the backup whose last second T is in
    drill.destroy_postgres()
    restored = drill.script("scripts/restore", "--to", target.isoformat())
    assert f"stopped within the second {_iso(stop_second)}" in restored, restored
    assert "which its WAL shows restorable from" in restored, restored
    with drill.superuser() as conn:
        got = [n for (n,) in conn.execute("SELECT n FROM drill_ticks ORDER BY n")]
        assert got == list(range(1, ticks_by_t + 1))
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        conn.execute("INSERT INTO drill_ticks (at, lsn) VALUES (clock_timestamp(), pg_current_wal_lsn())")
    with capsys.disabled():
        print(f"\n  T in the backup's last second: {ticks_by_t} ticks of {ticks_now} restored")
        print("  " + restored.strip().replace("\n", "\n  "))


async def _backup_with_a_tick_in_its_last_second() -> tuple[datetime, int, datetime] | None:
    """A full backup while ticks are written; (T, ticks committed by T, the backup's stop second), or None
    when no tick after the backup's end falls in its stop second."""
    stop = asyncio.Event()
    writer = asyncio.create_task(_write_ticks(stop))
    try:
        assert "full backup" in await asyncio.to_thread(drill.script, "scripts/backup", "full")
    finally:
        stop.set()
        await writer
    newest = drill.backups()[-1]
    stop_second = datetime.fromtimestamp(newest["timestamp"]["stop"], UTC)
    with drill.superuser() as conn:
        # the first tick j after a tick written past the backup's end (j-1 committed after the end), in the
        # backup's stop second
        row = conn.execute(
            "SELECT n, at FROM drill_ticks WHERE at >= %(second)s AND n > ("
            "  SELECT min(n) FROM drill_ticks WHERE lsn > %(end)s::pg_lsn) ORDER BY n LIMIT 1",
            {"second": stop_second + timedelta(milliseconds=2), "end": newest["lsn"]["stop"]},
        ).fetchone()
    if row is None:
        return None
    n, at = row
    # T lies in the pause between tick j-1's commit and tick j's start (the writer sleeps 10 ms there)
    target = at - timedelta(milliseconds=2)
    if target < stop_second or target >= stop_second + timedelta(seconds=1):
        return None
    return target, n - 1, stop_second


async def _write_ticks(stop: asyncio.Event) -> None:
    url = f"postgresql://postgres@127.0.0.1:{os.environ['PG_PORT']}/library"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            await conn.execute(
                "INSERT INTO drill_ticks (at, lsn) VALUES (clock_timestamp(), pg_current_wal_insert_lsn())"
            )
            await asyncio.sleep(0.01)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")
