"""Pure rules of cloud saves: conflict policies, quota, retention, etags and the conflict's description.
No I/O; unit-tested in tests/unit/test_cloud_save_rules.py."""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from server.core.events.cloudevents import rfc3339

PENDING = "pending"
COMMITTED = "committed"
CONFLICT = "conflict"
DISCARDED = "discarded"
# Rows whose bytes count against the quota (a pending one only until its reservation expires).
HELD = (PENDING, COMMITTED, CONFLICT)


class Policy(enum.IntEnum):
    """RequestSaveGameUploadURLRequest.ConflictPolicy (0, unspecified, is MANUAL)."""

    MANUAL = 1
    MOST_RECENTLY_MODIFIED = 2
    LONGEST_PLAYTIME = 3
    HIGHEST_PROGRESS = 4


class Winner(enum.Enum):
    LOCAL = "local"  # the upload
    CLOUD = "cloud"  # the slot's head


@dataclass(frozen=True, slots=True)
class SaveGame:
    """One save game as the contract shows it (`SaveGame`)."""

    savegame_id: uuid.UUID
    product_id: uuid.UUID
    slot_name: str
    status: str
    version_number: int  # 0 unless committed
    base_version: int
    file_size_bytes: int
    file_hash_sha256: str
    client_modified_at: datetime
    server_uploaded_at: datetime | None
    device_id: str
    playtime_seconds: int | None
    progress_percentage: float | None
    description: str
    etag: str


@dataclass(frozen=True, slots=True)
class Slot:
    product_id: uuid.UUID
    slot_name: str
    head: SaveGame | None
    versions: list[SaveGame]  # newest first, head included
    conflicts: list[SaveGame]  # oldest first
    etag: str


@dataclass(frozen=True, slots=True)
class Limits:
    quota_bytes: int
    max_file_bytes: int
    max_slots: int
    retained_versions: int


def object_key(user_id: uuid.UUID, product_id: uuid.UUID, savegame_id: uuid.UUID) -> str:
    """Server-made and unique to one save game: no two rows ever share an object."""
    return f"saves/{user_id}/{product_id}/{savegame_id}"


def decide(policy: int, local: SaveGame, cloud: SaveGame) -> Winner | None:
    """Which side an automatic policy keeps; None = ask the user (MANUAL, a tie, or a value either side
    lacks)."""

    def larger(a: float | None, b: float | None) -> Winner | None:
        if a is None or b is None or a == b:
            return None
        return Winner.LOCAL if a > b else Winner.CLOUD

    match policy:
        case Policy.MOST_RECENTLY_MODIFIED:
            return larger(local.client_modified_at.timestamp(), cloud.client_modified_at.timestamp())
        case Policy.LONGEST_PLAYTIME:
            return larger(local.playtime_seconds, cloud.playtime_seconds)
        case Policy.HIGHEST_PROGRESS:
            return larger(local.progress_percentage, cloud.progress_percentage)
    return None


def quota_problem(
    limits: Limits, *, used_bytes: int, slot_names: set[str], slot_name: str, size: int
) -> str | None:
    """Why a new reservation of `size` bytes in `slot_name` would break the quota, or None.

    `used_bytes` and `slot_names` are what the user holds now in the product: retained versions, conflict
    candidates and unexpired reservations (a reserved new slot counts as a slot).
    """
    if slot_name not in slot_names and len(slot_names) >= limits.max_slots:
        return f"at most {limits.max_slots} save slots per game"
    if used_bytes + size > limits.quota_bytes:
        return f"{used_bytes} of {limits.quota_bytes} bytes are in use; {size} more would exceed the quota"
    return None


def oldest_retained(head_version: int, keep: int) -> int:
    """The oldest version number a slot keeps once `head_version` is committed: the newest `keep` (at
    least the head). A slot's committed versions are always a contiguous range ending at the head (each
    commit is head + 1, pruning removes from the old end), so everything below this number goes."""
    return max(1, head_version - max(keep, 1) + 1)


def etag(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


def slot_etag(head: SaveGame | None, conflicts: Iterable[SaveGame]) -> str:
    """Changes whenever the head or the set of conflict candidates changes."""
    return etag(
        head.savegame_id if head else "",
        head.version_number if head else 0,
        *sorted(str(c.savegame_id) for c in conflicts),
    )


def conflict_metadata(local: SaveGame, cloud: SaveGame) -> dict[str, str]:
    """The ErrorInfo metadata of SAVEGAME_CONFLICT_RESOLUTION_REQUIRED: both sides, as the contract lists
    (a value a side lacks is left out)."""
    metadata = {
        "savegameId": str(local.savegame_id),
        "slotName": local.slot_name,
        "cloudSavegameId": str(cloud.savegame_id),
        "cloudVersionNumber": str(cloud.version_number),
    }
    for prefix, side in (("local", local), ("cloud", cloud)):
        values = {
            "ClientModifiedAt": rfc3339(side.client_modified_at),
            "DeviceId": side.device_id,
            "FileSizeBytes": str(side.file_size_bytes),
            "PlaytimeSeconds": None if side.playtime_seconds is None else str(side.playtime_seconds),
            "ProgressPercentage": None
            if side.progress_percentage is None
            else f"{side.progress_percentage:g}",
        }
        metadata.update({prefix + name: value for name, value in values.items() if value is not None})
    return metadata
