"""Cloud saves: push and pull save files through presigned URLs, resolve conflicts, restore versions
(CloudSaveService).

    push: hash the file (streamed), RequestSaveGameUploadURL, PUT the file with the required headers,
          ConfirmSaveGameUpload; a conflict raises SaveConflict with both sides.
    pull: RequestSaveGameDownloadURL, GET into a temporary file beside the target while hashing, and only
          if the SHA-256 matches, fsync and rename it over the target (atomic: the old file or the new one,
          never half of one).

The version a push is based on is the one this device last synced for the slot (kept in a small state file,
`LIBRARY_STATE_DIR`/saves.json, default ~/.local/state/library-client), unless the caller names one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
from google.rpc import error_details_pb2, status_pb2

from client.sdk.connection import Connection, new_request_id
from client.sdk.settings import default_device_id
from library.v1 import cloud_save_service_pb2 as pb
from library.v1 import cloud_save_service_pb2_grpc

CHUNK = 1024 * 1024
Progress = Callable[[int], None]  # called with the bytes just moved
POLICIES = ("MANUAL", "MOST_RECENTLY_MODIFIED", "LONGEST_PLAYTIME", "HIGHEST_PROGRESS")
RESOLUTIONS = {"cloud": "KEEP_CLOUD", "local": "KEEP_LOCAL", "both": "KEEP_BOTH"}


class TransferError(Exception):
    """The object store refused a PUT or GET, or a download did not match its SHA-256."""


@dataclass(frozen=True)
class SaveGame:
    savegame_id: str
    slot_name: str
    version_number: int
    status: str
    file_size_bytes: int
    file_hash_sha256: str
    client_modified_at: datetime | None
    server_uploaded_at: datetime | None
    device_id: str
    playtime_seconds: int
    progress_percentage: float
    description: str

    @classmethod
    def from_pb(cls, m: pb.SaveGame) -> SaveGame:
        return cls(
            savegame_id=m.savegame_id,
            slot_name=m.slot_name,
            version_number=m.version_number,
            status=pb.SaveGame.Status.Name(m.status),
            file_size_bytes=m.file_size_bytes,
            file_hash_sha256=m.file_hash_sha256,
            client_modified_at=_time(m, "client_modified_at"),
            server_uploaded_at=_time(m, "server_uploaded_at"),
            device_id=m.device_id,
            playtime_seconds=m.playtime_seconds,
            progress_percentage=m.progress_percentage,
            description=m.description,
        )


@dataclass(frozen=True)
class Slot:
    slot_name: str
    head: SaveGame | None
    versions: list[SaveGame]
    conflicts: list[SaveGame]
    etag: str

    @classmethod
    def from_pb(cls, m: pb.SaveSlot) -> Slot:
        return cls(
            slot_name=m.slot_name,
            head=SaveGame.from_pb(m.head) if m.HasField("head") else None,
            versions=[SaveGame.from_pb(v) for v in m.versions],
            conflicts=[SaveGame.from_pb(c) for c in m.conflicts],
            etag=m.etag,
        )


@dataclass(frozen=True)
class Listing:
    slots: list[Slot]
    quota_bytes: int
    used_bytes: int
    max_file_size_bytes: int

    def slot(self, name: str) -> Slot | None:
        return next((s for s in self.slots if s.slot_name == name), None)


@dataclass(frozen=True)
class Pushed:
    save_game: SaveGame
    head: SaveGame | None
    committed: bool  # False: an automatic policy kept the cloud head (pull it)
    auto_resolved: bool


@dataclass
class SaveConflict(Exception):
    """The slot moved on since the version this push was based on; the upload waits as a conflict candidate.
    `local` / `cloud` hold the ErrorInfo's description of each side (clientModifiedAt, deviceId,
    fileSizeBytes, playtimeSeconds, progressPercentage)."""

    savegame_id: str
    slot_name: str
    cloud_savegame_id: str
    cloud_version: int
    local: dict[str, str] = field(default_factory=dict)
    cloud: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> SaveConflict:
        def side(prefix: str) -> dict[str, str]:
            skip = ("cloudSavegameId", "cloudVersionNumber")
            return {
                key[len(prefix)].lower() + key[len(prefix) + 1 :]: value
                for key, value in metadata.items()
                if key.startswith(prefix) and key not in skip
            }

        return cls(
            savegame_id=metadata.get("savegameId", ""),
            slot_name=metadata.get("slotName", ""),
            cloud_savegame_id=metadata.get("cloudSavegameId", ""),
            cloud_version=int(metadata.get("cloudVersionNumber", "0")),
            local=side("local"),
            cloud=side("cloud"),
        )


def _time(message, name: str) -> datetime | None:
    return getattr(message, name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None


def _conflict_of(exc: grpc.aio.AioRpcError) -> SaveConflict | None:
    raw = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
    if exc.code() != grpc.StatusCode.ABORTED or not raw:
        return None
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.reason == "SAVEGAME_CONFLICT_RESOLUTION_REQUIRED":
                return SaveConflict.from_metadata(dict(info.metadata))
    return None


def file_sha256(path: Path) -> tuple[str, int]:
    """(hex SHA-256, size) of a file, read in 1 MiB pieces."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while piece := f.read(CHUNK):
            digest.update(piece)
            size += len(piece)
    return digest.hexdigest(), size


class SyncState:
    """What this device last synced per (product, slot): the version the next push is based on and, when
    known, the SHA-256 of that version's content (so a launcher can tell whether the local file changed)."""

    def __init__(self, directory: Path | None = None) -> None:
        root = directory or Path(
            os.environ.get("LIBRARY_STATE_DIR") or Path.home() / ".local" / "state" / "library-client"
        )
        self.path = root / "saves.json"

    def _load(self) -> dict[str, dict]:
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        # Entries written before the hash was kept are bare version numbers.
        return {k: v if isinstance(v, dict) else {"version": v, "sha256": ""} for k, v in raw.items()}

    def synced(self, product_id: str, slot: str) -> tuple[int, str]:
        """(version, SHA-256 or "" when unknown); (0, "") for a slot this device never synced."""
        entry = self._load().get(f"{product_id}/{slot}", {})
        return int(entry.get("version", 0)), str(entry.get("sha256", ""))

    def version(self, product_id: str, slot: str) -> int:
        return self.synced(product_id, slot)[0]

    def remember(self, product_id: str, slot: str, version: int, sha256: str = "") -> None:
        state = self._load()
        state[f"{product_id}/{slot}"] = {"version": version, "sha256": sha256}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.path, json.dumps(state, indent=2, sort_keys=True).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


class SavesClient:
    def __init__(
        self, connection: Connection, *, device_id: str | None = None, state: SyncState | None = None
    ) -> None:
        self._connection = connection
        self._stub = cloud_save_service_pb2_grpc.CloudSaveServiceStub(connection.channel)
        self.device_id = device_id or default_device_id()
        self.state = state or SyncState()

    async def list(self, product_id: str) -> Listing:
        reply = await self._connection.call(
            self._stub.ListSaveGames, pb.ListSaveGamesRequest(product_id=product_id)
        )
        return Listing(
            slots=[Slot.from_pb(s) for s in reply.slots],
            quota_bytes=reply.quota_bytes,
            used_bytes=reply.used_bytes,
            max_file_size_bytes=reply.max_file_size_bytes,
        )

    async def push(
        self,
        product_id: str,
        slot: str,
        path: Path,
        *,
        base_version: int | None = None,
        policy: str = "MANUAL",
        playtime_seconds: int | None = None,
        progress_percentage: float | None = None,
        description: str = "",
        on_progress: Progress | None = None,
    ) -> Pushed:
        """Uploads `path` as the slot's next version; raises SaveConflict when the slot moved on."""
        sha256, size = await asyncio.to_thread(file_sha256, path)
        modified_at = datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
        request = pb.RequestSaveGameUploadURLRequest(
            product_id=product_id,
            slot_name=slot,
            file_size_bytes=size,
            file_hash_sha256=sha256,
            base_version=self.state.version(product_id, slot) if base_version is None else base_version,
            device_id=self.device_id,
            description=description,
            conflict_policy=pb.RequestSaveGameUploadURLRequest.ConflictPolicy.Value(policy),
            request_id=new_request_id(),  # a retried request returns the same reservation
        )
        request.client_modified_at.FromDatetime(modified_at)
        if playtime_seconds is not None:
            request.playtime_seconds = playtime_seconds
        if progress_percentage is not None:
            request.progress_percentage = progress_percentage
        ticket = await self._connection.call(self._stub.RequestSaveGameUploadURL, request)
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as http:
            response = await http.put(
                ticket.upload_url,
                content=_read(path, on_progress),
                headers=dict(ticket.required_headers),
            )
        if response.status_code != 200:
            raise TransferError(f"the store refused the upload (HTTP {response.status_code}); push again")
        try:
            confirmed = await self._connection.call(
                self._stub.ConfirmSaveGameUpload,
                pb.ConfirmSaveGameUploadRequest(savegame_id=ticket.savegame_id),
            )
        except grpc.aio.AioRpcError as exc:
            raise _conflict_of(exc) or exc from None
        result = Pushed(
            save_game=SaveGame.from_pb(confirmed.save_game),
            head=SaveGame.from_pb(confirmed.head) if confirmed.HasField("head") else None,
            committed=confirmed.outcome == pb.ConfirmSaveGameUploadResponse.COMMITTED,
            auto_resolved=confirmed.auto_resolved,
        )
        if result.committed:
            self.state.remember(product_id, slot, result.save_game.version_number, sha256)
        return result

    async def pull(
        self,
        product_id: str,
        slot: str,
        path: Path,
        *,
        version: int | None = None,
        on_progress: Progress | None = None,
    ) -> SaveGame:
        """Downloads the slot's head (or `version`) over `path`, verified and atomically."""
        found = (await self.list(product_id)).slot(slot)
        if found is None or found.head is None:
            raise LookupError(f"there is no save in slot {slot!r}")
        chosen = self._pick(found, slot, version)
        link = await self._connection.call(
            self._stub.RequestSaveGameDownloadURL,
            pb.RequestSaveGameDownloadURLRequest(savegame_id=chosen.savegame_id),
        )
        await download_verified(link.download_url, path, chosen.file_hash_sha256, on_progress)
        # This device now knows the head: its next push is based on it (even after pulling an older one).
        same = chosen.savegame_id == found.head.savegame_id
        self.state.remember(
            product_id, slot, found.head.version_number, found.head.file_hash_sha256 if same else ""
        )
        return chosen

    @staticmethod
    def _pick(found: Slot, slot: str, version: int | None) -> SaveGame:
        if version is None:
            return found.head
        for candidate in found.versions:
            if candidate.version_number == version:
                return candidate
        kept = ", ".join(str(v.version_number) for v in found.versions)
        raise LookupError(f"version {version} of slot {slot!r} is not retained (kept: {kept})")

    async def resolve(
        self, product_id: str, slot: str, savegame_id: str, keep: str, *, new_slot: str = "", etag: str = ""
    ) -> tuple[Slot, Slot | None]:
        """`keep` is cloud, local or both (then the local copy becomes the slot `new_slot`)."""
        reply = await self._connection.call(
            self._stub.ResolveSaveGameConflict,
            pb.ResolveSaveGameConflictRequest(
                product_id=product_id,
                slot_name=slot,
                savegame_id=savegame_id,
                resolution=pb.ResolveSaveGameConflictRequest.Resolution.Value(RESOLUTIONS[keep]),
                new_slot_name=new_slot,
                etag=etag,
                request_id=new_request_id(),
            ),
        )
        resolved = Slot.from_pb(reply.slot)
        if keep == "local" and resolved.head is not None:
            head = resolved.head
            self.state.remember(product_id, slot, head.version_number, head.file_hash_sha256)
        return resolved, Slot.from_pb(reply.new_slot) if reply.HasField("new_slot") else None

    async def restore(self, product_id: str, slot: str, version: int, *, etag: str = "") -> Slot:
        reply = await self._connection.call(
            self._stub.RestoreSaveGameVersion,
            pb.RestoreSaveGameVersionRequest(
                product_id=product_id,
                slot_name=slot,
                version_number=version,
                device_id=self.device_id,
                etag=etag,
                request_id=new_request_id(),
            ),
        )
        return Slot.from_pb(reply.slot)


async def _read(path: Path, on_progress: Progress | None) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while piece := f.read(CHUNK):
            if on_progress:
                on_progress(len(piece))
            yield piece


async def download_verified(url: str, path: Path, sha256: str, on_progress: Progress | None = None) -> None:
    """GETs `url` into a temporary file beside `path`; replaces `path` only if the SHA-256 matches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as f:
            async with (
                httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as http,
                http.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise TransferError(f"the store refused the download (HTTP {response.status_code})")
                async for piece in response.aiter_bytes(CHUNK):
                    digest.update(piece)
                    f.write(piece)
                    if on_progress:
                        on_progress(len(piece))
            f.flush()
            os.fsync(f.fileno())
        if digest.hexdigest() != sha256:
            raise TransferError("the downloaded file does not match its SHA-256; the local file is unchanged")
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
