"""The downloads' retention rules (server/core/retention.py): what the client of a download held when it
started (its `download_session_held_chunks` and `download_session_kept_files`, recorded by StartDownload
for its manifest pages) is deleted once the download has ended, completed or cancelled, for
DOWNLOAD_HOLDINGS_RETENTION_SECONDS. Active downloads (queued, downloading, paused, failed: a failed
one can be resumed) keep theirs.

The ended downloads with rows are found from the rows themselves: the distinct download ids of a table,
one index probe each (a skip scan of its primary key, which begins with the download id), so a pass looks
at the downloads that still hold rows, never at every download that ever ended."""

from __future__ import annotations

from dataclasses import dataclass

from server.core.config import Settings
from server.downloads.session_rules import TERMINAL

_ENDED = ", ".join(f"'{status}'" for status in sorted(TERMINAL))


@dataclass(frozen=True, slots=True)
class EndedDownloadRows:
    """Rows of `table` (keyed by `download_id` first) of downloads that ended before the cutoff."""

    table: str
    keep_seconds: float

    def delete_sql(self) -> str:
        t = self.table
        ended = (
            f"WITH RECURSIVE held(id) AS ((SELECT download_id FROM {t} ORDER BY download_id LIMIT 1) "
            f"UNION ALL SELECT (SELECT download_id FROM {t} WHERE download_id > held.id "
            "ORDER BY download_id LIMIT 1) FROM held WHERE held.id IS NOT NULL) "
            "SELECT s.id FROM held JOIN download_sessions s ON s.id = held.id "
            f"WHERE s.status IN ({_ENDED}) AND s.updated_at < %s"
        )
        return (
            f"DELETE FROM {t} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {t} WHERE download_id = ANY(ARRAY({ended})) LIMIT %s FOR UPDATE SKIP LOCKED))"
        )


def download_retention_rules(settings: Settings) -> list[EndedDownloadRows]:
    keep = settings.download_holdings_retention_seconds
    return [
        EndedDownloadRows("download_session_held_chunks", keep),
        EndedDownloadRows("download_session_kept_files", keep),
    ]
