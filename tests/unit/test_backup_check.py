"""`scripts/backup --check`, the repository's side: what makes backups unhealthy (pgbackrest info as data)."""

from __future__ import annotations

from scripts.lib.backup_check import backup_findings, stanza_of

HOUR = 3600.0
NOW = 1_800_000_000.0


def info(*stops: float, code: int = 0, message: str = "ok") -> list[dict]:
    backups = [
        {"label": f"b{i}", "type": "full", "timestamp": {"start": stop - 60, "stop": stop}}
        for i, stop in enumerate(stops)
    ]
    archive = [{"min": "000000010000000000000001", "max": "000000010000000000000009"}] if stops else []
    return [
        {
            "name": "library",
            "status": {"code": code, "message": message},
            "backup": backups,
            "archive": archive,
        }
    ]


def verdicts(findings) -> dict[str, bool]:
    return {f.check: f.ok for f in findings}


def test_a_recent_backup_is_healthy_and_the_newest_one_counts():
    findings = backup_findings(stanza_of(info(NOW - 40 * HOUR, NOW - 2 * HOUR), "library"), NOW, 26 * HOUR)
    assert verdicts(findings) == {"stanza": True, "newest backup": True, "WAL in repository": True}
    assert "b1" in next(f.detail for f in findings if f.check == "newest backup")


def test_a_newest_backup_older_than_the_limit_fails():
    findings = backup_findings(stanza_of(info(NOW - 27 * HOUR), "library"), NOW, 26 * HOUR)
    assert verdicts(findings)["newest backup"] is False


def test_no_backup_fails_and_says_how_to_take_one():
    findings = backup_findings(stanza_of(info(code=2, message="no valid backups"), "library"), NOW, 26 * HOUR)
    assert verdicts(findings) == {"stanza": True, "newest backup": False}
    assert "scripts/backup full" in findings[-1].detail


def test_a_missing_or_broken_stanza_fails():
    assert verdicts(backup_findings(stanza_of([], "library"), NOW, 26 * HOUR))["stanza"] is False
    broken = info(NOW - HOUR, code=3, message="missing stanza data")
    assert verdicts(backup_findings(stanza_of(broken, "library"), NOW, 26 * HOUR))["stanza"] is False
