"""A product's save directory kept in step with its cloud saves: what `play` does before and after the game.

Each regular file at the top of the directory is the slot of the same name (slot names are 1-64 of
`[A-Za-z0-9 _.-]`; other names, hidden files and subdirectories are not synced and are reported as skipped).
The device remembers per slot the version it last synced and that version's SHA-256 (SyncState), so:

- before the game, a slot the cloud has is pulled when the local file is missing or unchanged since the
  last sync; a local file that already is the cloud's head is only remembered; a slot changed on both
  sides is a conflict: the local file is uploaded as a conflict candidate (or the candidate already there
  is reused) and the game does not start until it is resolved;
- after the game, every file that differs from what was last synced is pushed, based on that version; if
  another device pushed meanwhile, the server keeps the upload as a conflict candidate (nothing is lost).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from client.sdk.saves import Listing, SaveConflict, SaveGame, SavesClient, file_sha256

SLOT_NAME = re.compile(r"[A-Za-z0-9 _.-]{1,64}")


def is_save_file_name(slot: str) -> bool:
    """A slot that maps to a file of the save directory: a valid slot name that is not hidden (nor `.`
    or `..`, which name directories)."""
    return not slot.startswith(".") and SLOT_NAME.fullmatch(slot) is not None


@dataclass(frozen=True)
class Synced:
    """What this device last synced for a slot: the version and its content's SHA-256 ("" if unknown)."""

    version: int
    sha256: str


@dataclass(frozen=True)
class CloudHead:
    version: int
    sha256: str


@dataclass(frozen=True)
class PullPlan:
    pull: list[str] = field(default_factory=list)  # the cloud head replaces the local file
    adopt: list[str] = field(default_factory=list)  # the local file already is the head: remember it
    conflicts: list[str] = field(default_factory=list)  # changed here and in the cloud since the last sync


def plan_pull(
    local: Mapping[str, str], synced: Mapping[str, Synced], cloud: Mapping[str, CloudHead]
) -> PullPlan:
    """What to do per cloud slot before playing; `local` maps slot → SHA-256 of the local file."""
    plan = PullPlan()
    for slot, head in sorted(cloud.items()):
        if not is_save_file_name(slot):
            continue  # hidden, "." or "..": never a file of the directory, so it stays in the cloud only
        mine = local.get(slot)
        last = synced.get(slot, Synced(0, ""))
        if mine is None:
            plan.pull.append(slot)
        elif mine == head.sha256:
            if (last.version, last.sha256) != (head.version, head.sha256):
                plan.adopt.append(slot)
        elif mine == last.sha256:
            plan.pull.append(slot)  # untouched here since the last sync: the cloud's is newer
        elif head.version > last.version:
            plan.conflicts.append(slot)
        # else: changed only here; pushed after the game
    return plan


def changed_slots(local: Mapping[str, str], synced: Mapping[str, Synced]) -> list[str]:
    """The slots whose local file differs from what this device last synced (new files included)."""
    return sorted(slot for slot, sha in local.items() if synced.get(slot, Synced(0, "")).sha256 != sha)


def save_files(save_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """(slot → file, names skipped) of a save directory (a missing directory has no saves)."""
    files, skipped = {}, []
    if not save_dir.is_dir():
        return files, skipped
    for entry in sorted(save_dir.iterdir()):
        if entry.name.startswith("."):
            continue  # hidden, and the temporary files of a pull in progress
        if entry.is_file() and is_save_file_name(entry.name):
            files[entry.name] = entry
        else:
            skipped.append(entry.name)
    return files, skipped


def conflict_from_listing(candidate: SaveGame, head: SaveGame) -> SaveConflict:
    """The conflict a candidate already waiting in the cloud stands for, described as the server does."""

    def side(save: SaveGame) -> dict[str, str]:
        modified = save.client_modified_at.isoformat() if save.client_modified_at else ""
        return {
            "clientModifiedAt": modified,
            "deviceId": save.device_id,
            "fileSizeBytes": str(save.file_size_bytes),
            "playtimeSeconds": str(save.playtime_seconds),
            "progressPercentage": str(save.progress_percentage),
        }

    return SaveConflict(
        savegame_id=candidate.savegame_id,
        slot_name=candidate.slot_name,
        cloud_savegame_id=head.savegame_id,
        cloud_version=head.version_number,
        local=side(candidate),
        cloud=side(head),
    )


@dataclass
class SyncReport:
    pulled: list[str] = field(default_factory=list)
    pushed: list[str] = field(default_factory=list)
    conflicts: list[SaveConflict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class SaveDirSync:
    """Keeps `save_dir` and the product's cloud slots in step (see the module docstring)."""

    def __init__(self, saves: SavesClient, product_id: str, save_dir: Path) -> None:
        self.saves, self.product_id, self.save_dir = saves, product_id, save_dir

    async def _local(self) -> tuple[dict[str, Path], dict[str, str], list[str]]:
        files, skipped = save_files(self.save_dir)
        hashes = {slot: (await asyncio.to_thread(file_sha256, path))[0] for slot, path in files.items()}
        return files, hashes, skipped

    def _synced(self, slots) -> dict[str, Synced]:
        return {slot: Synced(*self.saves.state.synced(self.product_id, slot)) for slot in slots}

    async def before_play(self) -> SyncReport:
        """Pulls what the cloud has newer; returns the conflicts that must be resolved before playing."""
        listing = await self.saves.list(self.product_id)
        files, local, skipped = await self._local()
        heads = {s.slot_name: s.head for s in listing.slots if s.head is not None}
        cloud = {name: CloudHead(head.version_number, head.file_hash_sha256) for name, head in heads.items()}
        plan = plan_pull(local, self._synced(set(local) | set(cloud)), cloud)
        report = SyncReport(skipped=skipped)
        for slot in plan.adopt:
            self.saves.state.remember(self.product_id, slot, cloud[slot].version, cloud[slot].sha256)
        for slot in plan.pull:
            await self.saves.pull(self.product_id, slot, self.save_dir / slot)
            report.pulled.append(slot)
        for slot in plan.conflicts:
            report.conflicts.append(await self._conflict(listing, slot, files[slot], local[slot]))
        return report

    async def _conflict(self, listing: Listing, slot: str, path: Path, sha256: str) -> SaveConflict:
        found = listing.slot(slot)
        waiting = next((c for c in found.conflicts if c.file_hash_sha256 == sha256), None)
        if waiting is not None:
            return conflict_from_listing(waiting, found.head)
        try:
            await self.saves.push(self.product_id, slot, path)
        except SaveConflict as conflict:
            return conflict
        raise AssertionError("a push based on an older version than the head was committed")

    async def after_play(self, *, playtime_seconds: int | None = None) -> SyncReport:
        """Pushes every save file that changed since the last sync."""
        files, local, skipped = await self._local()
        report = SyncReport(skipped=skipped)
        for slot in changed_slots(local, self._synced(local)):
            try:
                await self.saves.push(self.product_id, slot, files[slot], playtime_seconds=playtime_seconds)
            except SaveConflict as conflict:
                report.conflicts.append(conflict)
            else:
                report.pushed.append(slot)
        return report

    async def settle(self, *slots: str) -> list[str]:
        """After a conflict was resolved: each slot's local file becomes its cloud head (pulled unless it
        already is it). Returns the slots pulled."""
        listing = await self.saves.list(self.product_id)
        _, local, _ = await self._local()
        pulled = []
        for slot in slots:
            found = listing.slot(slot)
            if found is None or found.head is None:
                continue
            head = found.head
            if local.get(slot) == head.file_hash_sha256:
                self.saves.state.remember(self.product_id, slot, head.version_number, head.file_hash_sha256)
            else:
                await self.saves.pull(self.product_id, slot, self.save_dir / slot)
                pulled.append(slot)
        return pulled
