"""Which backup set `scripts/restore --to TIME` restores, from `pgbackrest info --output=json` (stdin).

    restore_set.py --to TIME|latest --config PGBACKREST_CONF --stanza NAME --pg-bin DIR

Prints the label of the newest backup set that ended at or before TIME (for latest: the newest one;
scripts/restore passes it to pgBackRest as --set) and a line saying what is restored; exits 2 with a
message when the repository cannot be read, holds no backup, or no backup ended by TIME (naming the
earliest restorable time). scripts/restore changes nothing before this answered.

Why not leave the choice to pgBackRest: it looks for a backup whose stop time, in whole seconds, is before
TIME, so a TIME in the last second of the oldest usable backup finds none. A backup's stop time is the
database's clock just after pg_backup_stop, cut to the second: one that stopped in an earlier second than
TIME's surely ended before TIME. For one that stopped in TIME's own second, the WAL of the backup tells:
recovery replays it up to the backup's end before it may stop, so it reaches TIME exactly when no
transaction in that WAL committed after TIME (otherwise PostgreSQL stops with "requested recovery stop
point is before consistent recovery point"). Its end is the later of its last commit and its stop second.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import zstandard

SEGMENTS_PER_LOG = 0x100  # 16 MiB WAL segments (the cluster's initdb default)
_COMMIT = re.compile(r"desc: (?:COMMIT|ABORT)\S* (?:\d+: )?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


@dataclass(frozen=True)
class Backup:
    label: str
    type: str
    stop: int  # epoch seconds, cut to the second
    lsn_start: str
    lsn_stop: str
    wal_start: str
    wal_stop: str
    archive_id: str  # the WAL archive of the backup's cluster, e.g. 15-1

    @property
    def stop_second(self) -> datetime:
        return datetime.fromtimestamp(self.stop, UTC)


@dataclass(frozen=True)
class Choice:
    label: str
    note: str


class NotRestorable(Exception):
    """No backup set can reach the time asked for; the message says why and what to do."""


def backups_of(info: list[dict], stanza: str) -> list[Backup]:
    """The stanza's backup sets, oldest first (NotRestorable when the repository cannot be read)."""
    entry = next((s for s in info if s.get("name") == stanza), {})
    status = entry.get("status", {"code": 1, "message": "missing stanza"})
    if status["code"] not in (0, 2):  # 2: no valid backup (said by choose)
        reasons = "; ".join(r["status"]["message"] for r in entry.get("repo") or [] if r["status"]["code"])
        raise NotRestorable(
            f"cannot read stanza {stanza} in the backup repository: {reasons or status['message']} "
            "(is the stack's S3 up?). Nothing was changed."
        )
    archives = {a["database"]["id"]: a["id"] for a in entry.get("archive") or []}
    found = [
        Backup(
            label=b["label"],
            type=b["type"],
            stop=int(b["timestamp"]["stop"]),
            lsn_start=b["lsn"]["start"],
            lsn_stop=b["lsn"]["stop"],
            wal_start=b["archive"]["start"],
            wal_stop=b["archive"]["stop"],
            archive_id=archives.get(b["database"]["id"], ""),
        )
        for b in entry.get("backup") or []
    ]
    return sorted(found, key=lambda b: b.stop)


def choose(
    backups: list[Backup],
    target: datetime | None,
    end_of: Callable[[Backup], datetime | None],
    now: datetime,
) -> Choice:
    """The newest backup that ended at or before `target` (None: the newest of all, for --to latest).
    `end_of` reads a backup's exact end from its WAL (None when unreadable); it is asked only about a backup
    that stopped in `target`'s own second, and about the oldest backup when none fits (for the message)."""
    if not backups:
        raise NotRestorable(
            "the repository holds no backup: there is nothing to restore from. Nothing was changed."
        )
    if target is None:
        return Choice(backups[-1].label, f"backup {_describe(backups[-1])}, then the WAL archive to its end")
    if target > now:
        raise NotRestorable(
            f"--to {_iso(target)} is in the future: recovery would run out of WAL before reaching it. "
            "Restore everything archived with --to latest. Nothing was changed."
        )
    second = int(target.timestamp() // 1)
    for backup in reversed(backups):
        if backup.stop < second:
            return Choice(backup.label, f"backup {_describe(backup)}, then WAL up to {_iso(target)}")
        if backup.stop == second:
            end = end_of(backup)
            if end is not None and end <= target:
                return Choice(
                    backup.label,
                    f"backup {_describe(backup)}, which its WAL shows restorable from {_iso(end)} on, "
                    f"then WAL up to {_iso(target)}",
                )
    oldest = backups[0]
    end = end_of(oldest)
    earliest = (
        _iso(end) if end is not None else f"{_iso(oldest.stop_second + timedelta(seconds=1))} at the latest"
    )
    raise NotRestorable(
        f"--to {_iso(target)} is before the end of the oldest backup in the repository, {_describe(oldest)}: "
        f"recovery cannot go back before a backup's end. The earliest time this repository can restore to "
        f"is {earliest}. Pass a TIME at or after it, or --to latest for everything archived (nothing older "
        f"is kept: BACKUP_RETENTION_FULL_DAYS). Nothing was changed."
    )


def _describe(backup: Backup) -> str:
    return f"{backup.label} ({backup.type}, stopped within the second {_iso(backup.stop_second)})"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def segments(first: str, last: str) -> Iterator[str]:
    """WAL segment names from `first` to `last` (one timeline: a backup never spans a switch)."""
    timeline, number, end = first[:8], int(first[8:], 16), int(last[8:], 16)
    end = (end >> 32) * SEGMENTS_PER_LOG + (end & 0xFFFFFFFF)
    number = (number >> 32) * SEGMENTS_PER_LOG + (number & 0xFFFFFFFF)
    for n in range(number, end + 1):
        yield f"{timeline}{n // SEGMENTS_PER_LOG:08X}{n % SEGMENTS_PER_LOG:08X}"


def last_commit(waldump_output: str) -> datetime | None:
    """The newest commit or abort timestamp in `pg_waldump` output (run with TZ=UTC)."""
    stamps = [datetime.fromisoformat(m).replace(tzinfo=UTC) for m in _COMMIT.findall(waldump_output)]
    return max(stamps, default=None)


_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "": bytes,
    ".gz": gzip.decompress,
    ".zst": lambda raw: zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read(),
}


class WalReader:
    """Reads a backup's WAL from the repository with pg_waldump. The segments are fetched with repo-ls and
    repo-get (archive-get would want the cluster's data directory, which a restore usually lacks)."""

    def __init__(self, config: str, stanza: str, pg_bin: str) -> None:
        self.pgbackrest = [
            "runuser",
            "-u",
            "postgres",
            "--",
            "pgbackrest",
            f"--config={config}",
            f"--stanza={stanza}",
        ]
        self.stanza = stanza
        self.pg_bin = pg_bin

    def end_of(self, backup: Backup) -> datetime | None:
        """The backup's end: its last transaction's commit time, or its stop second if later."""
        with tempfile.TemporaryDirectory(prefix="restore-wal-") as scratch:
            for name in segments(backup.wal_start, backup.wal_stop):
                wal = self._segment(backup.archive_id, name)
                if wal is None:
                    return None
                Path(scratch, name).write_bytes(wal)
            timeline = int(backup.wal_start[:8], 16)
            waldump = [f"{self.pg_bin}/pg_waldump", f"--path={scratch}", f"--timeline={timeline}"]
            dump = subprocess.run(
                [*waldump, "--rmgr=Transaction", f"--start={backup.lsn_start}", f"--end={backup.lsn_stop}"],
                capture_output=True,
                text=True,
                env={**os.environ, "TZ": "UTC"},
            )
        if dump.returncode != 0:
            return None
        committed = last_commit(dump.stdout)
        return max(committed, backup.stop_second) if committed else backup.stop_second

    def _segment(self, archive_id: str, name: str) -> bytes | None:
        """One archived WAL segment, decompressed (None when the repository lacks it)."""
        folder = f"archive/{self.stanza}/{archive_id}/{name[:16]}"
        listed = self._run("repo-ls", "--output=json", folder)
        stored = [f for f in json.loads(listed or b"{}") if f.startswith(f"{name}-")] if listed else []
        if len(stored) != 1:
            return None
        decompress = _DECOMPRESS.get(stored[0][len(name) + 41 :])  # after "-" and the 40-digit SHA-1
        raw = self._run("repo-get", f"{folder}/{stored[0]}")
        return decompress(raw) if raw is not None and decompress else None

    def _run(self, *args: str) -> bytes | None:
        done = subprocess.run([*self.pgbackrest, *args], cwd="/", capture_output=True)
        return done.stdout if done.returncode == 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", required=True, help="ISO 8601 time with a UTC offset, or latest")
    parser.add_argument("--config", required=True)
    parser.add_argument("--stanza", required=True)
    parser.add_argument("--pg-bin", required=True)
    args = parser.parse_args()
    target = None if args.to == "latest" else datetime.fromisoformat(args.to)
    try:
        backups = backups_of(json.load(sys.stdin), args.stanza)
        reader = WalReader(args.config, args.stanza, args.pg_bin)
        choice = choose(backups, target, reader.end_of, datetime.now(UTC))
    except NotRestorable as refused:
        print(f"restore: {refused}", file=sys.stderr)
        return 2
    print(choice.label)
    print(choice.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
