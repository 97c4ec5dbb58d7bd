"""What scripts/backup reports, from `pgbackrest info --output=json` (stdin) and the cluster's archiver.

    backup_check.py summary --seconds N   one line about the newest backup (after scripts/backup took it)
    backup_check.py check [--json]        backup health; exit status 1 when unhealthy:
        - no backup, or the newest one finished more than $BACKUP_MAX_AGE_HOURS ago;
        - a finished WAL segment has waited more than $WAL_ARCHIVE_MAX_AGE_SECONDS to be archived
          (archive_command failing or too slow: the RPO no longer holds);
        - archive_timeout is longer than $WAL_ARCHIVE_MAX_AGE_SECONDS (at low traffic the newest commits
          could wait that long in the current segment);
        - archiving is not on, or the stanza is not healthy.

Settings come from the environment (scripts/lib/env.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

import psycopg


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def stanza_of(info: list[dict], name: str) -> dict:
    """The stanza's entry in `pgbackrest info --output=json` (an empty one when the repository lacks it)."""
    for entry in info:
        if entry.get("name") == name:
            return entry
    return {"name": name, "backup": [], "archive": [], "status": {"code": 1, "message": "missing"}}


def _newest(stanza: dict) -> dict | None:
    backups = stanza.get("backup") or []
    return max(backups, key=lambda b: b["timestamp"]["stop"]) if backups else None


def backup_findings(stanza: dict, now: float, max_age: float) -> list[Finding]:
    """The repository's side: the stanza's status and the newest backup's age (`max_age` seconds at most)."""
    newest = _newest(stanza)
    status = stanza.get("status", {})
    # code 2 = "no valid backups": reported by the backup age finding below
    stanza_ok = status.get("code") in (0, 2)
    findings = [Finding("stanza", stanza_ok, f"{stanza['name']}: {status.get('message', '?')}")]
    if newest is None:
        findings.append(
            Finding("newest backup", False, "no backup in the repository: run scripts/backup full")
        )
        return findings
    age = now - newest["timestamp"]["stop"]
    findings.append(
        Finding(
            "newest backup",
            age <= max_age,
            f"{newest['label']} ({newest['type']}), finished {_age(age)} ago (limit {_age(max_age)})",
        )
    )
    archive = stanza.get("archive") or []
    if archive:
        findings.append(Finding("WAL in repository", True, f"{archive[-1]['min']} .. {archive[-1]['max']}"))
    return findings


def archiver_findings(conn: psycopg.Connection, now: float, max_age: float) -> list[Finding]:
    """The cluster's side: archiving on, archive_timeout within `max_age` seconds, no WAL waiting longer."""
    mode, timeout = conn.execute(
        "SELECT current_setting('archive_mode'), "
        "EXTRACT(EPOCH FROM current_setting('archive_timeout')::interval)::float"
    ).fetchone()
    findings = [Finding("archive_mode", mode == "on", f"archive_mode = {mode}")]
    findings.append(
        Finding(
            "archive_timeout",
            0 < timeout <= max_age,
            f"{timeout:.0f}s (must be > 0 and at most the RPO bound {max_age:.0f}s)",
        )
    )
    pending, oldest = conn.execute(
        "SELECT count(*), EXTRACT(EPOCH FROM min(modification))::float "
        "FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
    ).fetchone()
    waited = 0.0 if oldest is None else now - oldest
    findings.append(
        Finding(
            "WAL waiting",
            waited <= max_age,
            f"{pending} segment(s) not yet archived, oldest waiting {_age(waited)} (limit {_age(max_age)})",
        )
    )
    last_ok, last_ok_at, last_failed_at = conn.execute(
        "SELECT last_archived_wal, EXTRACT(EPOCH FROM last_archived_time)::float, "
        "EXTRACT(EPOCH FROM last_failed_time)::float FROM pg_stat_archiver"
    ).fetchone()
    if last_ok is not None:
        detail = f"{last_ok}, {_age(now - last_ok_at)} ago"
        if last_failed_at is not None and last_failed_at > last_ok_at:
            detail += f"; the last attempt failed {_age(now - last_failed_at)} ago"
        findings.append(Finding("last archived WAL", True, detail))
    return findings


def check(as_json: bool) -> int:
    now = time.time()
    max_backup_age = float(os.environ["BACKUP_MAX_AGE_HOURS"]) * 3600
    findings = backup_findings(
        stanza_of(json.load(sys.stdin), os.environ["BACKUP_STANZA"]), now, max_backup_age
    )
    url = f"postgresql://postgres@127.0.0.1:{os.environ['PG_PORT']}/postgres"
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            findings += archiver_findings(conn, now, float(os.environ["WAL_ARCHIVE_MAX_AGE_SECONDS"]))
    except psycopg.OperationalError as exc:
        findings.append(Finding("cluster", False, f"cannot query the archiver at {url}: {exc}".strip()))
    healthy = all(f.ok for f in findings)
    if as_json:
        print(json.dumps({"healthy": healthy, "findings": [asdict(f) for f in findings]}, indent=2))
    else:
        width = max(len(f.check) for f in findings)
        for f in findings:
            print(f"{'ok  ' if f.ok else 'FAIL'}  {f.check:<{width}}  {f.detail}")
        print("backup health: " + ("ok" if healthy else "FAILING (see docs/OPERATIONS.md, 'Backup health')"))
    return 0 if healthy else 1


def summary(seconds: int) -> int:
    newest = _newest(stanza_of(json.load(sys.stdin), os.environ["BACKUP_STANZA"]))
    if newest is None:
        print("backup: the repository holds no backup", file=sys.stderr)
        return 1
    size = newest["info"]["repository"]["delta"] / 2**20
    print(
        f"backup: {newest['type']} backup {newest['label']} done in {seconds}s "
        f"({size:.1f} MiB stored, WAL {newest['archive']['start']} .. {newest['archive']['stop']})"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["summary", "check"])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seconds", type=int, default=0)
    args = parser.parse_args()
    return check(args.json) if args.command == "check" else summary(args.seconds)


if __name__ == "__main__":
    sys.exit(main())
