"""`scripts/restore --to TIME` picks the backup set itself: the newest that ended at or before TIME by its
exact end (pgBackRest's own choice compares whole seconds), and refuses a TIME before every backup's end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scripts.lib.restore_set import Backup, NotRestorable, backups_of, choose, last_commit, segments

SECOND = 1_796_171_215  # a backup's stop second


NOW = datetime.fromtimestamp(SECOND + 3600, UTC)


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(SECOND, UTC) + timedelta(seconds=seconds)


def backup(label: str, stop: int) -> Backup:
    wal = "000000010000000000000002"
    return Backup(label, "full", stop, "0/2000028", "0/2000138", wal, wal, "15-1")


class Ends:
    """A fake WAL reader: each backup's exact end, and which backups it was asked about."""

    def __init__(self, **ends: datetime | None) -> None:
        self.ends, self.asked = ends, []

    def __call__(self, b: Backup) -> datetime | None:
        self.asked.append(b.label)
        return self.ends[b.label]


def test_a_backup_stopped_in_an_earlier_second_is_taken_without_reading_its_wal():
    ends = Ends()
    choice = choose([backup("old", SECOND - 3600), backup("new", SECOND - 1)], at(0.01), ends, NOW)
    assert choice.label == "new" and ends.asked == []


def test_time_in_the_last_second_of_a_backup_that_ended_before_it_restores_from_that_backup():
    ends = Ends(new=at(0.3))
    choice = choose([backup("old", SECOND - 3600), backup("new", SECOND)], at(0.5), ends, NOW)
    assert choice.label == "new"
    assert "restorable from 2026-12-02T00:26:55.300000Z" in choice.note


def test_time_in_a_backups_last_second_but_before_its_end_takes_the_older_backup():
    ends = Ends(new=at(0.3))
    assert choose([backup("old", SECOND - 3600), backup("new", SECOND)], at(0.2), ends, NOW).label == "old"


def test_a_backup_whose_wal_cannot_be_read_is_not_trusted_in_its_last_second():
    ends = Ends(new=None)
    assert choose([backup("old", SECOND - 3600), backup("new", SECOND)], at(0.9), ends, NOW).label == "old"


def test_a_backup_stopped_after_the_time_is_never_taken():
    assert (
        choose([backup("old", SECOND - 60), backup("new", SECOND + 1)], at(0.9), Ends(), NOW).label == "old"
    )


@pytest.mark.parametrize(
    ("target", "end", "earliest"),
    [
        (at(-30), at(0.3), "2026-12-02T00:26:55.300000Z"),  # before the backup
        (at(0.2), at(0.3), "2026-12-02T00:26:55.300000Z"),  # in its last second, before its end
        (at(-30), None, "2026-12-02T00:26:56Z at the latest"),  # its WAL unreadable
    ],
)
def test_a_time_before_every_backups_end_is_refused_naming_the_earliest_restorable_time(
    target, end, earliest
):
    with pytest.raises(NotRestorable) as refused:
        choose(
            [backup("only", SECOND), backup("newer", SECOND + 60)], target, Ends(only=end, newer=None), NOW
        )
    message = str(refused.value)
    assert "before the end of the oldest backup in the repository, only" in message
    assert f"The earliest time this repository can restore to is {earliest}." in message
    assert "Nothing was changed." in message


def test_latest_takes_the_newest_backup_and_an_empty_repository_is_refused():
    assert choose([backup("old", SECOND - 60), backup("new", SECOND)], None, Ends(), NOW).label == "new"
    with pytest.raises(NotRestorable, match="holds no backup"):
        choose([], at(0), Ends(), NOW)


def test_a_time_in_the_future_is_refused():
    with pytest.raises(NotRestorable, match="is in the future"):
        choose([backup("only", SECOND)], NOW + timedelta(seconds=1), Ends(), NOW)


def test_an_unreadable_repository_is_refused_with_its_reason():
    info = [
        {
            "name": "library",
            "backup": [],
            "repo": [{"key": 1, "status": {"code": 99, "message": "unable to connect to '127.0.0.1:1'"}}],
            "status": {"code": 99, "message": "other"},
        }
    ]
    with pytest.raises(NotRestorable) as refused:
        backups_of(info, "library")
    assert "unable to connect to '127.0.0.1:1' (is the stack's S3 up?)" in str(refused.value)


def test_backups_come_oldest_first_with_their_clusters_wal_archive():
    def entry(label: str, stop: int) -> dict:
        return {
            "label": label,
            "type": "incr",
            "timestamp": {"start": stop - 5, "stop": stop},
            "lsn": {"start": "0/3000028", "stop": "0/3000100"},
            "archive": {"start": "000000020000000000000003", "stop": "000000020000000000000003"},
            "database": {"id": 2, "repo-key": 1},
        }

    info = [
        {
            "name": "library",
            "status": {"code": 0, "message": "ok"},
            "archive": [{"database": {"id": 1}, "id": "15-1"}, {"database": {"id": 2}, "id": "15-2"}],
            "backup": [entry("b", SECOND), entry("a", SECOND - 10)],
        }
    ]
    found = backups_of(info, "library")
    assert [b.label for b in found] == ["a", "b"]
    assert found[0].archive_id == "15-2" and found[0].stop == SECOND - 10


def test_wal_segments_of_a_backup_cross_a_log_boundary():
    assert list(segments("0000000200000001000000FE", "000000020000000200000001")) == [
        "0000000200000001000000FE",
        "0000000200000001000000FF",
        "000000020000000200000000",
        "000000020000000200000001",
    ]


def test_last_commit_reads_commit_and_abort_records_of_pg_waldump():
    dump = "\n".join(
        [
            "rmgr: Transaction len (rec/tot): 34/34, tx: 735, lsn: 0/0300A2E8, prev 0/0300A2B0, "
            "desc: COMMIT 2026-12-02 00:26:55.123456 UTC",
            "rmgr: Transaction len (rec/tot): 34/34, tx: 736, lsn: 0/0300A310, prev 0/0300A2E8, "
            "desc: ABORT 2026-12-02 00:26:55.223456 UTC",
            "rmgr: Transaction len (rec/tot): 66/66, tx: 737, lsn: 0/0300A338, prev 0/0300A310, "
            "desc: COMMIT_PREPARED 737: 2026-12-02 00:26:55.2 UTC; inval msgs: catcache 7",
            "rmgr: Transaction len (rec/tot): 90/90, tx: 738, lsn: 0/0300A380, prev 0/0300A338, "
            "desc: PREPARE gid t1: 2026-12-02 00:26:59.000000 UTC",
        ]
    )
    assert last_commit(dump) == at(0.223456)
    assert last_commit("rmgr: XLOG len (rec/tot): 34/34, desc: BACKUP_END 0/2000028") is None
