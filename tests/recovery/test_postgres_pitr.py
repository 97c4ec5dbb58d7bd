"""Point-in-time recovery of PostgreSQL, end to end on the drill's stack: data written through the API, a
full backup, more writes, a time T, writes after T; the cluster is destroyed and `scripts/restore --to T`
brings back exactly what was committed by T, and the service serves on the restored database."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc

from library.v1 import cloud_save_service_pb2_grpc, library_service_pb2_grpc, playtime_service_pb2_grpc
from library.v1 import library_service_pb2 as library_pb
from tests.recovery import drill
from tests.support.auth import user_metadata
from tests.support.library import grant_entitlements, upsert_products
from tests.support.saves import SaveFile, fetch, listing, push
from tests.support.waiting import wait_until


async def library_products(stub, user: uuid.UUID) -> set[uuid.UUID]:
    reply = await stub.ListLibraryItems(
        library_pb.ListLibraryItemsRequest(page_size=100), metadata=user_metadata(user)
    )
    return {uuid.UUID(item.product_id) for item in reply.items}


async def test_restore_to_a_point_in_time_brings_back_exactly_what_was_committed_by_then(settings, capsys):
    user = uuid.uuid4()
    games = [uuid.uuid4() for _ in range(4)]
    saves = [SaveFile.random() for _ in range(3)]
    async with drill.service(settings) as target, grpc.aio.insecure_channel(target) as channel:
        library = library_service_pb2_grpc.LibraryServiceStub(channel)
        playtime = playtime_service_pb2_grpc.PlaytimeTrackerServiceStub(channel)
        cloud = cloud_save_service_pb2_grpc.CloudSaveServiceStub(channel)
        # 1. before the backup: a library item, a play session ended, a save committed
        await upsert_products(library, {game: f"Game {i}" for i, game in enumerate(games)})
        await grant_entitlements(library, user, games[0])
        played = await drill.play(playtime, user, games[0])
        assert played.credited_duration_seconds >= 1
        assert (await push(cloud, user, games[0], "slot", saves[0])).head.version_number == 1
        # 2. the backup
        assert "full backup" in drill.script("scripts/backup", "full")
        backed_up = _database_time(settings)
        # 3. more writes, then T
        await grant_entitlements(library, user, games[1])
        assert (await push(cloud, user, games[0], "slot", saves[1], base=1)).head.version_number == 2
        # T in a later second than the backup's stop (the usual case; T inside the backup's last second is
        # test_restore_in_a_backups_last_second.py)
        await wait_until(
            lambda: _database_time(settings).replace(microsecond=0) > backed_up + timedelta(seconds=1),
            what="a whole second after the backup",
        )
        point = _database_time(settings)
        # 4. writes after T
        await grant_entitlements(library, user, games[2])
        assert (await push(cloud, user, games[0], "slot", saves[2], base=2)).head.version_number == 3
        assert (await drill.play(playtime, user, games[1])).credited_duration_seconds >= 1
        assert await library_products(library, user) == set(games[:3])
        written_after_t = drill.current_wal_segment()

    # The WAL holding step 4 reaches the archive by itself (archive_timeout), as it would before a crash.
    archive_timeout = float(os.environ["PG_ARCHIVE_TIMEOUT"])
    await drill.wait_archived(written_after_t, timeout=3 * archive_timeout + 60)
    # 5. the disaster
    drill.destroy_postgres()
    # 6. restore to T, then the service starts on the restored database
    started = time.monotonic()
    restored = drill.script("scripts/restore", "--to", point.astimezone(UTC).isoformat())
    restore_seconds = time.monotonic() - started
    async with drill.service(settings) as target, grpc.aio.insecure_channel(target) as channel:
        serving_seconds = time.monotonic() - started
        library = library_service_pb2_grpc.LibraryServiceStub(channel)
        playtime = playtime_service_pb2_grpc.PlaytimeTrackerServiceStub(channel)
        cloud = cloud_save_service_pb2_grpc.CloudSaveServiceStub(channel)
        # 7. exactly the data up to T
        assert await library_products(library, user) == set(games[:2])
        assert await drill.total_playtime(playtime, user, games[0]) == played.total_playtime_seconds
        assert await drill.total_playtime(playtime, user, games[1]) == 0
        [slot] = (await listing(cloud, user, games[0])).slots
        assert slot.head.version_number == 2
        assert sorted(v.version_number for v in slot.versions) == [1, 2]
        assert await fetch(cloud, user, slot.head.savegame_id) == saves[1].body
        # ... and the restored database takes new writes
        await grant_entitlements(library, user, games[3])
        assert await library_products(library, user) == {games[0], games[1], games[3]}
        assert (await push(cloud, user, games[0], "slot", saves[2], base=2)).head.version_number == 3

    with capsys.disabled():
        print(f"\n  RTO (test database): restore {restore_seconds:.1f}s,", end=" ")
        print(f"service serving {serving_seconds:.1f}s after the restore began")
        print(f"  RPO bound: archive_timeout {archive_timeout:.0f}s + one archive-push")
        print("  " + restored.strip().replace("\n", "\n  "))


def _database_time(settings) -> datetime:
    with drill.service_db(settings) as conn:
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]
