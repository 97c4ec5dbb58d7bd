"""Pure rules of download sessions: the state machine, the queue, and smoothed speed / ETA (no I/O).

State machine (the contract's, DownloadSession.DownloadStatus):
  queued → downloading → completed; downloading ⇄ paused (queued → paused too);
  failed → queued/downloading (retry); any non-terminal → cancelled; completed and cancelled are terminal.
The queue: at most `max_concurrent` sessions of a user are downloading; the others wait by priority
(higher first), then age (older first). A queued session may start only inside the user's schedule window,
unless it was started "now".
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from server.core.errors import FailedPrecondition

QUEUED, DOWNLOADING, PAUSED = "queued", "downloading", "paused"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
STATUSES = (QUEUED, DOWNLOADING, PAUSED, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, CANCELLED})
ACTIVE = frozenset({QUEUED, DOWNLOADING, PAUSED, FAILED})  # every non-terminal status

MIN_PRIORITY, MAX_PRIORITY = 0, 100

SESSION_STATUS_CHANGED = "com.platform.download.session.status.changed.v1"
ITEM_STATUS_CHANGED = "com.platform.download.item.status.changed.v1"
STATUS_CHANGED_NOTIFICATION = "downloadStatusChanged"
PROGRESS_NOTIFICATION = "downloadProgress"


class Action(enum.Enum):
    PAUSE = "pause"
    RESUME = "resume"  # resume a paused session or retry a failed one
    CANCEL = "cancel"
    REPRIORITIZE = "reprioritize"
    COMPLETE = "complete"
    FAIL = "fail"


# Where each action may start from. RESUME lands in QUEUED; promotion then decides who downloads.
_ALLOWED: dict[Action, frozenset[str]] = {
    Action.PAUSE: frozenset({QUEUED, DOWNLOADING}),
    Action.RESUME: frozenset({PAUSED, FAILED}),
    Action.CANCEL: ACTIVE,
    Action.REPRIORITIZE: ACTIVE,
    Action.COMPLETE: frozenset({DOWNLOADING}),
    Action.FAIL: frozenset({DOWNLOADING}),
}
_TARGET: dict[Action, str | None] = {
    Action.PAUSE: PAUSED,
    Action.RESUME: QUEUED,
    Action.CANCEL: CANCELLED,
    Action.REPRIORITIZE: None,  # keeps its status
    Action.COMPLETE: COMPLETED,
    Action.FAIL: FAILED,
}


def invalid_transition(status: str, action: Action) -> FailedPrecondition:
    return FailedPrecondition(
        f"a {status} download cannot {action.value}",
        reason="INVALID_STATE_TRANSITION",
        metadata={"status": status, "action": action.value},
    )


def transition(status: str, action: Action) -> str:
    """The status after `action`; FAILED_PRECONDITION INVALID_STATE_TRANSITION when not allowed."""
    if status not in _ALLOWED[action]:
        raise invalid_transition(status, action)
    return _TARGET[action] or status


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """What the queue needs to know about one of a user's sessions."""

    session_id: uuid.UUID
    status: str
    priority: int
    created_at: datetime
    start_now: bool = False


def queue_order(entry: QueueEntry) -> tuple:
    """Sort key of the waiting line: higher priority first, then older, then id (a total order)."""
    return (-entry.priority, entry.created_at, str(entry.session_id))


def to_promote(entries: Iterable[QueueEntry], *, max_concurrent: int, in_window: bool) -> list[uuid.UUID]:
    """The queued sessions that start downloading now, in queue order: as many as there are free slots,
    skipping those the schedule window holds back (outside the window only `start_now` ones may start)."""
    entries = list(entries)
    free = max_concurrent - sum(1 for e in entries if e.status == DOWNLOADING)
    if free <= 0:
        return []
    waiting = sorted(
        (e for e in entries if e.status == QUEUED and (in_window or e.start_now)), key=queue_order
    )
    return [e.session_id for e in waiting[:free]]


def progress_percentage(downloaded: int, total: int) -> float:
    """downloaded / total * 100 in [0, 100]; 100 when there is nothing to transfer."""
    if total <= 0:
        return 100.0
    return max(0.0, min(100.0, downloaded * 100.0 / total))


# Speed smoothing: an exponential moving average over time, so reports arriving at any rate weigh by the
# time they cover (a report 0.1 s after the previous moves the average less than one 5 s after it).
SPEED_TIME_CONSTANT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class SpeedSample:
    """The live state speed smoothing keeps between reports."""

    at_ms: int  # server time of the last report
    downloaded: int  # bytes reported then
    speed: float  # smoothed bytes per second; 0 until two reports


def smooth(previous: SpeedSample | None, now_ms: int, downloaded: int) -> SpeedSample:
    """The sample after a report of `downloaded` bytes at `now_ms`. The first report only sets the base; a
    report at the same instant or going backwards (a discarded chunk) keeps the speed and moves the base.
    Mirrored by the progress script in progress.py."""
    if previous is None:
        return SpeedSample(now_ms, downloaded, 0.0)
    dt_ms = now_ms - previous.at_ms
    delta = downloaded - previous.downloaded
    if dt_ms <= 0 or delta < 0:
        return SpeedSample(max(now_ms, previous.at_ms), downloaded, previous.speed)
    instant = delta * 1000.0 / dt_ms
    if previous.speed <= 0:
        return SpeedSample(now_ms, downloaded, instant)
    alpha = 1.0 - math.exp(-dt_ms / (SPEED_TIME_CONSTANT_SECONDS * 1000))
    return SpeedSample(now_ms, downloaded, previous.speed + alpha * (instant - previous.speed))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)  # made once: timedelta's keyword constructor costs ~2 us (every report)


def epoch_ms(when: datetime) -> int:
    """Server time in whole milliseconds, exactly (no float rounding), as the live state keeps it."""
    return (when - _EPOCH) // _MS


ETA_MAX_SECONDS = 2**31 - 1  # the contract's eta_seconds is an int32


def eta_seconds(downloaded: int, total: int, speed: float) -> int | None:
    """Seconds left at the smoothed speed (rounded up); None while the speed is unknown, and when the ETA
    would be beyond ETA_MAX_SECONDS: a download that stops moving keeps reporting, its speed decays towards
    0 and remaining / speed grows past the contract's int32 within minutes (then past a float's range).
    Mirrored by the progress script in progress.py."""
    if speed <= 0:
        return None
    left = max(0, total - downloaded) / speed
    return math.ceil(left) if left <= ETA_MAX_SECONDS else None


PROGRESS_NOTIFY_INTERVAL_MS = 1000


def notify_due(
    last_notified_ms: int | None, now_ms: int, interval_ms: int = PROGRESS_NOTIFY_INTERVAL_MS
) -> bool:
    """downloadProgress goes out at most once per `interval_ms` per session."""
    return last_notified_ms is None or now_ms - last_notified_ms >= interval_ms


def status_changed_payload(
    *,
    download_id: uuid.UUID,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    version_id: uuid.UUID,
    new_status: str,
    previous_status: str | None,
    downloaded_bytes: int,
    total_size_bytes: int,
    when: str,
    error_message: str = "",
) -> dict:
    """`com.platform.download.session.status.changed.v1` data (seed 001 §5.1, shaped like its item event),
    also the payload of the `downloadStatusChanged` notification."""
    return {
        "downloadSessionId": str(download_id),
        "userId": str(user_id),
        "productId": str(product_id),
        "versionId": str(version_id),
        "newStatus": new_status,
        "previousStatus": previous_status,
        "downloadedBytes": downloaded_bytes,
        "totalSizeBytes": total_size_bytes,
        "timestamp": when,
        "errorDetails": error_message or None,
    }


def item_id(download_id: uuid.UUID, path: str) -> uuid.UUID:
    """The stable id of one file of a session (seed entity DownloadItem), derived, not stored."""
    return uuid.uuid5(download_id, path)


def item_status_changed_payload(
    *,
    download_id: uuid.UUID,
    path: str,
    file_id: uuid.UUID,
    size_bytes: int,
    completed: bool,
    when: str,
    error_message: str = "",
) -> dict:
    """`com.platform.download.item.status.changed.v1` data (seed 001 §5.1). A completed file counts all its
    bytes; a failed one reports none as usable."""
    return {
        "downloadSessionId": str(download_id),
        "downloadItemId": str(item_id(download_id, path)),
        "fileMetadataId": str(file_id),
        "relativePath": path,
        "newStatus": COMPLETED if completed else FAILED,
        "previousStatus": DOWNLOADING,
        "downloadedBytes": size_bytes if completed else 0,
        "totalFileSizeBytes": size_bytes,
        "timestamp": when,
        "errorDetails": None if completed else (error_message or "failed"),
    }
