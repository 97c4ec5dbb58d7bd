"""Pure achievement rules: monotonic progress, the unlock transition, percentages, masking, unlock rates,
reading definitions from catalog events.

No I/O. The use cases apply these to a snapshot read from the database; the repository's conditional
upsert then makes the write race-safe (see repository.record_progress).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any


def normalised_max_progress(value: int) -> int:
    """0 or 1 means a binary (unlock-only) achievement, stored as 1."""
    return max(value, 1)


@dataclass(slots=True)
class Definition:
    product_id: str
    api_name: str
    display_name: str
    description: str
    hidden: bool
    max_progress: int
    icon_url: str
    icon_locked_url: str
    display_order: int


@dataclass(slots=True)
class Progress:
    """One user's stored state on one achievement (absent row = `Progress()`)."""

    progress: int = 0
    is_unlocked: bool = False
    unlocked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProgressChange:
    """What a report does to the stored state. `unlocks` is the locked → unlocked transition."""

    progress: int
    unlocks: bool
    changed: bool


def merge_progress(current: Progress, reported: int, max_progress: int) -> ProgressChange:
    """Monotonic merge of an absolute report: values above max are capped, lower values are ignored.

    Reaching max unlocks; an unlocked achievement never changes again. A stored progress already at or
    above a (since lowered) max unlocks on the next report, never retroactively on the definition change.
    """
    if current.is_unlocked:
        return ProgressChange(progress=current.progress, unlocks=False, changed=False)
    merged = max(current.progress, min(reported, max_progress))
    unlocks = merged >= max_progress
    return ProgressChange(progress=merged, unlocks=unlocks, changed=unlocks or merged > current.progress)


def progress_percentage(progress: int, max_progress: int, is_unlocked: bool) -> int:
    """floor(100 * progress / max), clamped to 0..100; 100 once unlocked."""
    if is_unlocked:
        return 100
    return max(0, min(100, (100 * progress) // max_progress))


def unlock_rate(unlocked_users: int, owners: int) -> float:
    """Fraction of the product's current owners who unlocked it, in [0, 1].

    Unlockers who later lost the product still count in the numerator, hence the clamp.
    """
    if owners <= 0:
        return 0.0
    return min(1.0, unlocked_users / owners)


@dataclass(slots=True)
class Status:
    """The caller's view of one achievement, as the contract's AchievementStatus."""

    product_id: str
    api_name: str
    display_name: str
    description: str
    hidden: bool
    icon_url: str
    icon_locked_url: str
    progress: int
    max_progress: int
    progress_percentage: int
    is_unlocked: bool
    unlocked_at: datetime | None
    global_unlock_rate: float


def status_of(definition: Definition, progress: Progress, rate: float) -> Status:
    """Merges a definition with the user's state; hidden ones are masked until unlocked."""
    shown = min(progress.progress, definition.max_progress)
    status = Status(
        product_id=definition.product_id,
        api_name=definition.api_name,
        display_name=definition.display_name,
        description=definition.description,
        hidden=definition.hidden,
        icon_url=definition.icon_url,
        icon_locked_url=definition.icon_locked_url,
        progress=shown,
        max_progress=definition.max_progress,
        progress_percentage=progress_percentage(shown, definition.max_progress, progress.is_unlocked),
        is_unlocked=progress.is_unlocked,
        unlocked_at=progress.unlocked_at if progress.is_unlocked else None,
        global_unlock_rate=rate,
    )
    return masked(status)


def masked(status: Status) -> Status:
    """A hidden achievement the user has not unlocked is masked completely: no api name, name,
    description, icon or progress; only that a hidden one exists (its locked icon and unlock rate)."""
    if status.hidden and not status.is_unlocked:
        return replace(
            status,
            api_name="",
            display_name="",
            description="",
            icon_url="",
            progress=0,
            max_progress=0,
            progress_percentage=0,
        )
    return status


# What a catalog product event calls its definitions (seed 000 §5.2: `updatedFields` names them).
CATALOG_DEFINITIONS_FIELD = "achievement_definitions"
_API_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def catalog_definitions(data: Mapping[str, Any]) -> list[Definition] | None:
    """The definitions a `com.platform.catalog.product.updated.v1` payload carries when its
    `updatedFields` include `achievement_definitions` (`achievementDefinitions`: [{`apiName`,
    `displayName`, `description`, `hidden`, `maxProgress`, `iconUrl`, `iconLockedUrl`, `displayOrder`}]),
    read by the contract rules of UpsertAchievementDefinitions; None when it carries none. ValueError /
    KeyError / TypeError when malformed."""
    if CATALOG_DEFINITIONS_FIELD not in (data.get("updatedFields") or ()):
        return None
    product_id = str(uuid.UUID(str(data["productId"])))
    definitions: dict[str, Definition] = {}
    for entry in data["achievementDefinitions"]:
        api_name, display_name = entry["apiName"], entry["displayName"]
        if not isinstance(api_name, str) or not _API_NAME.fullmatch(api_name):
            raise ValueError("apiName must be 1-128 of [A-Za-z0-9_.-]")
        if not isinstance(display_name, str) or not display_name.strip() or len(display_name) > 256:
            raise ValueError("displayName must be 1-256 characters")
        max_progress = int(entry.get("maxProgress") or 0)
        if max_progress < 0:
            raise ValueError("maxProgress must not be negative")
        definitions[api_name] = Definition(
            product_id=product_id,
            api_name=api_name,
            display_name=display_name,
            description=str(entry.get("description") or ""),
            hidden=bool(entry.get("hidden", False)),
            max_progress=normalised_max_progress(max_progress),
            icon_url=str(entry.get("iconUrl") or ""),
            icon_locked_url=str(entry.get("iconLockedUrl") or ""),
            display_order=int(entry.get("displayOrder") or 0),
        )
    return list(definitions.values())
