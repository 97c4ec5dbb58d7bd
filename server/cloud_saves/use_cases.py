"""Cloud-save use cases: upload (reserve → presigned PUT → confirm), conflicts and their resolution,
restore, listing and download.

Every change to a user's saves of one product first takes that (user, product) row lock
(`SaveRepository.lock_owner`), so the quota, the next version number and the "is the base still the head"
check are decided by one transaction at a time: concurrent requests can never exceed the quota, and of N
confirms on the same base exactly one becomes the head. S3 writes and deletes happen outside those
transactions (a confirm's HEAD overlaps its locking: `CloudSaves.confirm`); S3 objects are deleted only
through the deletion queue (`sweeper.py`), never before `reserved_until`, so a presigned PUT still in flight
cannot recreate an object after its deletion.
"""

from __future__ import annotations

import contextlib
import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from server.cloud_saves import repository, rules
from server.cloud_saves.repository import SaveRecord, SaveRepository
from server.cloud_saves.rules import COMMITTED, CONFLICT, DISCARDED, PENDING, Limits, SaveGame, Slot, Winner
from server.cloud_saves.tables import SaveGameRow
from server.core import replay
from server.core.deps import Deps
from server.core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from server.core.events.cloudevents import rfc3339
from server.core.overlap import Overlapped
from server.core.replay import request_key
from server.core.s3 import StoreUnavailable
from server.core.uow import UnitOfWork
from server.library.entitlements import Ownership, require_owned

SAVEGAME_UPLOADED = "com.platform.library.savegame.uploaded.v1"
SYNCED_NOTIFICATION = "cloudSaveSynced"
CONFLICT_NOTIFICATION = "cloudSaveConflict"


class Resolution(enum.IntEnum):
    """ResolveSaveGameConflictRequest.Resolution."""

    KEEP_CLOUD = 1
    KEEP_LOCAL = 2
    KEEP_BOTH = 3


def savegame_not_found(message: str = "no such save game") -> NotFound:
    return NotFound(message, reason="SAVEGAME_NOT_FOUND")


class QuotaExceeded(ResourceExhausted):
    reason = "MAX_SAVEGAME_QUOTA_EXCEEDED"


class UploadFailed(FailedPrecondition):
    reason = "SAVEGAME_UPLOAD_FAILED"


class ConflictResolutionRequired(Aborted):
    reason = "SAVEGAME_CONFLICT_RESOLUTION_REQUIRED"

    def __init__(self, local: SaveGame, cloud: SaveGame):
        super().__init__(
            f"slot {local.slot_name!r} changed since version {local.base_version} (the cloud has version "
            f"{cloud.version_number}); resolve the conflict with ResolveSaveGameConflict",
            metadata=rules.conflict_metadata(local, cloud),
        )


@dataclass(frozen=True, slots=True)
class UploadRequest:
    product_id: uuid.UUID
    slot_name: str
    file_size_bytes: int
    file_hash_sha256: str  # lowercase
    base_version: int
    client_modified_at: datetime
    device_id: str
    playtime_seconds: int | None
    progress_percentage: float | None
    description: str
    conflict_policy: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """What a RequestSaveGameUploadURL replay needs (the URL itself is never stored)."""

    savegame_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class UploadTicket:
    savegame_id: uuid.UUID
    upload_url: str
    required_headers: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Confirmation:
    save_game: SaveGame
    committed: bool  # False: DISCARDED (an automatic policy kept the cloud head)
    auto_resolved: bool
    head: SaveGame | None


@dataclass(frozen=True, slots=True)
class Listing:
    slots: list[Slot]
    quota_bytes: int
    used_bytes: int
    max_file_size_bytes: int


@dataclass(frozen=True, slots=True)
class Download:
    download_url: str
    expires_at: datetime
    save_game: SaveGame


@dataclass(frozen=True, slots=True)
class Resolved:
    slot: Slot
    new_slot: Slot | None


@dataclass(frozen=True, slots=True)
class Restored:
    slot: Slot
    head: SaveGame


def save_game(values: Sequence) -> SaveGame:
    """A save game from its `repository.SHOWN_COLUMNS` values."""
    (
        savegame_id,
        product_id,
        slot_name,
        status,
        version_number,
        base_version,
        file_size_bytes,
        file_hash_sha256,
        client_modified_at,
        server_uploaded_at,
        device_id,
        playtime_seconds,
        progress_percentage,
        description,
        updated_at,
    ) = values
    return SaveGame(
        savegame_id=savegame_id,
        product_id=product_id,
        slot_name=slot_name,
        status=status,
        version_number=version_number or 0,
        base_version=base_version,
        file_size_bytes=file_size_bytes,
        file_hash_sha256=file_hash_sha256,
        client_modified_at=client_modified_at,
        server_uploaded_at=server_uploaded_at,
        device_id=device_id,
        playtime_seconds=playtime_seconds,
        progress_percentage=progress_percentage,
        description=description,
        etag=rules.etag(savegame_id, status, version_number, slot_name, updated_at.isoformat()),
    )


def view(row: SaveGameRow | SaveRecord) -> SaveGame:
    return save_game([getattr(row, column) for column in repository.SHOWN_COLUMNS])


def slots_of(product_id: uuid.UUID, rows: Sequence[tuple]) -> list[Slot]:
    """Slots by name from `repository.shown` rows (committed newest first, conflicts oldest first)."""
    grouped: dict[str, tuple[list[SaveGame], list[SaveGame]]] = {}
    for row in rows:
        save = save_game(row)
        versions, conflicts = grouped.setdefault(save.slot_name, ([], []))
        (versions if save.status == COMMITTED else conflicts).append(save)
    slots = []
    for name, (versions, conflicts) in grouped.items():
        head = versions[0] if versions else None
        slots.append(Slot(product_id, name, head, versions, conflicts, rules.slot_etag(head, conflicts)))
    return slots


class CloudSaves:
    def __init__(self, deps: Deps):
        self._deps = deps
        self._store = deps.store
        settings = deps.settings
        self.limits = Limits(
            quota_bytes=settings.saves_quota_bytes,
            max_file_bytes=settings.saves_max_file_bytes,
            max_slots=settings.saves_max_slots,
            retained_versions=settings.saves_retained_versions,
        )
        self._upload_expiry = settings.saves_upload_url_expiry_seconds
        self._download_expiry = settings.saves_download_url_expiry_seconds
        self._grace = timedelta(seconds=settings.saves_reservation_grace_seconds)

    # ------------------------------------------------------------------ reads

    async def list_slots(self, user_id: uuid.UUID, product_id: uuid.UUID) -> Listing:
        async with self._deps.uow.read() as db:
            rows = await repository.shown(db, user_id, product_id)
            usage = await repository.usage(db, user_id, product_id, self._deps.clock())
        return Listing(
            slots_of(product_id, rows), self.limits.quota_bytes, usage.used_bytes, self.limits.max_file_bytes
        )

    async def download(self, user_id: uuid.UUID, savegame_id: uuid.UUID) -> Download:
        async with self._deps.uow() as uow:
            row = await SaveRepository(uow).get(user_id, savegame_id)
        if row is None or row.status not in (COMMITTED, CONFLICT):
            raise savegame_not_found()
        try:
            stored = await self._store.head(row.s3_object_key)
        except StoreUnavailable as exc:
            raise StoreUnavailable("SAVEGAME_DOWNLOAD_FAILED") from exc
        if stored is None:
            raise savegame_not_found()
        link = self._store.presign_get(row.s3_object_key, expires_in=self._download_expiry)
        return Download(link.url, link.expires_at, view(row))

    # ------------------------------------------------------------------ upload

    async def request_upload(
        self, user_id: uuid.UUID, request: UploadRequest, request_id: uuid.UUID | None
    ) -> UploadTicket:
        """Reserves quota for the file and presigns its PUT. Nothing is held when it fails."""
        if request.file_size_bytes > self.limits.max_file_bytes:
            raise InvalidArgument(
                [FieldViolation("file_size_bytes", f"must be at most {self.limits.max_file_bytes} bytes")]
            )
        key = request_key(user_id, "RequestSaveGameUploadURL", request_id)
        async with self._deps.uow() as uow:
            repo = SaveRepository(uow, writes_with_commit=True)
            if (first := await replay.claim(uow, key, Reservation)) is not None:
                ticket = await self._represent(uow, user_id, first.savegame_id)
                await uow.commit()
                return ticket
            now = self._deps.clock()
            # the ownership check goes with the owner lock and the usage (a non-owner's lock is rolled back)
            ownership = Ownership(user_id, request.product_id)
            usage = await repo.lock_and_usage(user_id, request.product_id, now, first=ownership.send)
            await ownership.require()
            head_version = usage.head_versions.get(request.slot_name, 0)
            if request.base_version > head_version:
                raise InvalidArgument(
                    [
                        FieldViolation(
                            "base_version", f"must not be above the slot's head version {head_version}"
                        )
                    ]
                )
            problem = rules.quota_problem(
                self.limits,
                used_bytes=usage.used_bytes,
                slot_names=usage.slot_names,
                slot_name=request.slot_name,
                size=request.file_size_bytes,
            )
            if problem is not None:
                raise QuotaExceeded(
                    problem,
                    metadata={
                        "quotaBytes": str(self.limits.quota_bytes),
                        "usedBytes": str(usage.used_bytes),
                        "maxSlots": str(self.limits.max_slots),
                    },
                )
            savegame_id = uuid.uuid4()
            object_key = rules.object_key(user_id, request.product_id, savegame_id)
            upload = self._store.presign_put(
                object_key,
                size=request.file_size_bytes,
                sha256_hex=request.file_hash_sha256,
                expires_in=self._upload_expiry,
            )
            await repo.insert(
                id=savegame_id,
                user_id=user_id,
                product_id=request.product_id,
                slot_name=request.slot_name,
                status=PENDING,
                base_version=request.base_version,
                file_size_bytes=request.file_size_bytes,
                file_hash_sha256=request.file_hash_sha256,
                s3_object_key=object_key,
                client_modified_at=request.client_modified_at,
                device_id=request.device_id,
                playtime_seconds=request.playtime_seconds,
                progress_percentage=request.progress_percentage,
                description=request.description,
                conflict_policy=request.conflict_policy,
                reserved_until=upload.expires_at + self._grace,
                updated_at=now,
            )
            await replay.remember(uow, key, Reservation(savegame_id))
            await uow.commit()
        return UploadTicket(savegame_id, upload.url, upload.headers, upload.expires_at)

    async def _represent(self, uow: UnitOfWork, user_id: uuid.UUID, savegame_id: uuid.UUID) -> UploadTicket:
        """A replayed reservation: the same save game with a fresh URL, while it is still pending."""
        row = await SaveRepository(uow).get(user_id, savegame_id, lock=True)
        if row is None or row.status != PENDING or row.reserved_until <= self._deps.clock():
            raise FailedPrecondition(
                "the upload of this request_id was already confirmed or has expired; confirm it or request a "
                "new upload without this request_id",
                metadata={"savegameId": str(savegame_id)},
            )
        upload = self._store.presign_put(
            row.s3_object_key,
            size=row.file_size_bytes,
            sha256_hex=row.file_hash_sha256,
            expires_in=self._upload_expiry,
        )
        row.reserved_until = max(row.reserved_until, upload.expires_at + self._grace)
        return UploadTicket(row.id, upload.url, upload.headers, upload.expires_at)

    async def confirm(self, user_id: uuid.UUID, savegame_id: uuid.UUID) -> Confirmation:
        """Verifies the stored object, then commits it, lets a policy decide a conflict, or keeps it as a
        conflict candidate (then raises ConflictResolutionRequired after the commit).

        The row is read first (a read unit, no lock), which names the object. The store is then asked for
        it while, in one transaction, the owner and row locks are taken and the row re-read with its slot's
        head: the HEAD and the locking overlap rather than follow each other, so the locks are held for
        what is left of the HEAD (bounded by S3_TIMEOUT_SECONDS) and the commit. Nothing is decided before
        both are in. What is decided is written with the commit (one round trip)."""
        async with self._deps.uow.read() as db:
            upload = await repository.upload(db, user_id, savegame_id)
        if upload is None:
            raise savegame_not_found("no such upload, or its reservation expired")
        if upload.status == PENDING and upload.reserved_until <= self._deps.clock():
            raise savegame_not_found("no such upload, or its reservation expired")
        async with Overlapped(
            self._store.head(upload.s3_object_key) if upload.status == PENDING else None
        ) as stored_object:
            return await self._confirm_locked(user_id, savegame_id, upload, stored_object)

    async def _confirm_locked(
        self, user_id: uuid.UUID, savegame_id: uuid.UUID, upload: repository.Upload, stored_object: Overlapped
    ) -> Confirmation:
        conflict: tuple[SaveGame, SaveGame] | None = None
        async with self._deps.uow() as uow:
            repo = SaveRepository(uow, writes_with_commit=True)
            row, head = await repo.locked_with_head(user_id, savegame_id, upload.product_id, upload.slot_name)
            now = self._deps.clock()
            if row is not None and row.status != PENDING:
                if row.slot_name != upload.slot_name:  # moved by KEEP_BOTH since the first read
                    head = await repo.head(user_id, row.product_id, row.slot_name)
                return self._settled(row, head)
            if row is None or row.reserved_until <= now:
                raise savegame_not_found("no such upload, or its reservation expired")
            stored = await stored_object.result()
            intact = (
                stored is not None
                and stored.size == row.file_size_bytes
                and stored.sha256_hex == row.file_hash_sha256
            )
            if not intact:
                object_key = row.s3_object_key
                await repo.forget(row, delete_after=now)
                await uow.commit()
                with contextlib.suppress(StoreUnavailable):  # now if it can; the queue makes sure
                    await self._store.delete(object_key)
                raise UploadFailed(
                    "the stored object is missing or its size or SHA-256 differs; upload the file again",
                    metadata={"savegameId": str(savegame_id)},
                )
            result, conflict = await self._place(uow, repo, row, head, now)
            await repo.settle(row)
            await uow.commit()
        if conflict is not None:
            raise ConflictResolutionRequired(*conflict)
        return result

    async def _place(
        self, uow: UnitOfWork, repo: SaveRepository, row: SaveRecord, head: SaveRecord | None, now: datetime
    ) -> tuple[Confirmation, tuple[SaveGame, SaveGame] | None]:
        """A verified upload: the new head, discarded by a policy, or a conflict candidate."""
        if head is None or row.base_version == head.version_number:
            await self._make_head(uow, repo, row, head, now)
            return Confirmation(view(row), True, False, view(row)), None
        local, cloud = view(row), view(head)
        winner = rules.decide(row.conflict_policy, local, cloud)
        if winner is Winner.LOCAL:
            row.auto_resolved = True
            await self._make_head(uow, repo, row, head, now)
            return Confirmation(view(row), True, True, view(row)), None
        if winner is Winner.CLOUD:
            row.auto_resolved = True
            await self._discard(repo, row, now)
            return Confirmation(view(row), False, True, cloud), None
        row.status, row.server_uploaded_at, row.updated_at = CONFLICT, now, now
        local = view(row)
        uow.notify(
            row.user_id,
            CONFLICT_NOTIFICATION,
            {
                "productId": str(row.product_id),
                "slotName": row.slot_name,
                "savegameId": str(row.id),
                "versionNumber": cloud.version_number,
                "deviceId": row.device_id,
                "cloudSavegameId": str(cloud.savegame_id),
                "cloudDeviceId": cloud.device_id,
                "message": "Save conflict: choose which version to keep.",
                "timestamp": rfc3339(now),
            },
        )
        return Confirmation(local, False, False, cloud), (local, cloud)

    @staticmethod
    def _settled(row: SaveRecord, head: SaveRecord | SaveGameRow | None) -> Confirmation:
        """The answer to confirming an upload again: the same outcome (a conflict fails again). `head`: the
        head of the row's slot."""
        head_view = view(head) if head else None
        if row.status == CONFLICT and head_view is not None:
            raise ConflictResolutionRequired(view(row), head_view)
        return Confirmation(view(row), row.status == COMMITTED, row.auto_resolved, head_view)

    async def _make_head(
        self,
        uow: UnitOfWork,
        repo: SaveRepository,
        row: SaveGameRow | SaveRecord,
        head: SaveGameRow | SaveRecord | None,
        now: datetime,
    ) -> None:
        """Commits `row` as the slot's next version, prunes beyond retention, announces the sync."""
        row.status = COMMITTED
        row.version_number = (head.version_number if head else 0) + 1
        row.server_uploaded_at = now
        row.updated_at = now
        oldest = rules.oldest_retained(row.version_number, self.limits.retained_versions)
        if oldest > 1:
            await repo.prune(row.user_id, row.product_id, row.slot_name, below=oldest, now=now)
        timestamp = rfc3339(now)
        uow.add_event(
            SAVEGAME_UPLOADED,
            row.user_id,
            {
                "userId": str(row.user_id),
                "productId": str(row.product_id),
                "savegameId": str(row.id),
                "slotName": row.slot_name,
                "versionNumber": row.version_number,
                "deviceId": row.device_id,
                "fileSizeBytes": row.file_size_bytes,
                "fileHashSha256": row.file_hash_sha256,
                "timestamp": timestamp,
            },
        )
        uow.notify(
            row.user_id,
            SYNCED_NOTIFICATION,
            {
                "productId": str(row.product_id),
                "slotName": row.slot_name,
                "savegameId": str(row.id),
                "versionNumber": row.version_number,
                "deviceId": row.device_id,
                "timestamp": timestamp,
            },
        )

    async def _discard(self, repo: SaveRepository, row: SaveRecord, now: datetime) -> None:
        """The row stays (a repeated confirm answers DISCARDED) but holds no quota; its object is queued."""
        row.status, row.updated_at = DISCARDED, now
        await repo.queue_deletion(row.s3_object_key, delete_after=max(now, row.reserved_until))

    # ------------------------------------------------------------------ conflicts and restore

    async def resolve(
        self,
        user_id: uuid.UUID,
        product_id: uuid.UUID,
        slot_name: str,
        savegame_id: uuid.UUID,
        resolution: Resolution,
        new_slot_name: str,
        etag: str,
        request_id: uuid.UUID | None,
    ) -> Resolved:
        key = request_key(user_id, "ResolveSaveGameConflict", request_id)
        async with self._deps.uow() as uow:
            if (first := await replay.claim(uow, key, Resolved)) is not None:
                return first
            repo = SaveRepository(uow)
            await repo.lock_owner(user_id, product_id)
            now = self._deps.clock()
            row = await repo.get(user_id, savegame_id, lock=True)
            if row is None or (row.product_id, row.slot_name, row.status) != (
                product_id,
                slot_name,
                CONFLICT,
            ):
                raise savegame_not_found("no such conflict candidate in this slot")
            await self._check_etag(repo, user_id, product_id, slot_name, etag)
            new_slot = None
            if resolution is Resolution.KEEP_CLOUD:
                await repo.forget(row, delete_after=now)
            elif resolution is Resolution.KEEP_LOCAL:
                await self._make_head(uow, repo, row, await repo.head(user_id, product_id, slot_name), now)
            else:
                if await repo.slot_in_use(user_id, product_id, new_slot_name, now):
                    raise AlreadyExists(
                        f"slot {new_slot_name!r} already exists", reason="SAVEGAME_SLOT_ALREADY_EXISTS"
                    )
                if len((await repo.usage(user_id, product_id, now)).slot_names) >= self.limits.max_slots:
                    raise QuotaExceeded(f"at most {self.limits.max_slots} save slots per game")
                row.slot_name = new_slot_name
                await self._make_head(uow, repo, row, None, now)
                new_slot = await self._slot(repo, user_id, product_id, new_slot_name)
            result = Resolved(await self._slot(repo, user_id, product_id, slot_name), new_slot)
            await replay.remember(uow, key, result)
            await uow.commit()
        return result

    async def restore(
        self,
        user_id: uuid.UUID,
        product_id: uuid.UUID,
        slot_name: str,
        version_number: int,
        device_id: str,
        etag: str,
        request_id: uuid.UUID | None,
    ) -> Restored:
        """Reserves the copy (quota, and a pending row that releases it if we crash), copies the object in
        the store, verifies the copy, then commits it as the new head."""
        async with self._deps.uow() as uow:
            repo = SaveRepository(uow)
            replayed = await replay.peek(
                uow, request_key(user_id, "RestoreSaveGameVersion", request_id), Restored
            )
            if replayed is not None:
                return replayed
            await require_owned(uow.session, user_id, product_id)
            await repo.lock_owner(user_id, product_id)
            now = self._deps.clock()
            source = await self._retained(repo, user_id, product_id, slot_name, version_number)
            await self._check_etag(repo, user_id, product_id, slot_name, etag)
            usage = await repo.usage(user_id, product_id, now)
            problem = rules.quota_problem(
                self.limits,
                used_bytes=usage.used_bytes,
                slot_names=usage.slot_names,
                slot_name=slot_name,
                size=source.file_size_bytes,
            )
            if problem is not None:
                raise QuotaExceeded(problem)
            copy_id = uuid.uuid4()
            copy = SaveGameRow(
                id=copy_id,
                user_id=user_id,
                product_id=product_id,
                slot_name=slot_name,
                status=PENDING,
                base_version=0,
                file_size_bytes=source.file_size_bytes,
                file_hash_sha256=source.file_hash_sha256,
                s3_object_key=rules.object_key(user_id, product_id, copy_id),
                client_modified_at=source.client_modified_at,
                device_id=device_id,
                playtime_seconds=source.playtime_seconds,
                progress_percentage=source.progress_percentage,
                description=source.description,
                reserved_until=now + self._grace,
                updated_at=now,
            )
            repo.add(copy)
            source_key, copy_key = source.s3_object_key, copy.s3_object_key
            await uow.commit()
        try:
            await self._store.copy(source_key, copy_key)
            stored = await self._store.head(copy_key)
            if stored is None or (stored.size, stored.sha256_hex) != (
                copy.file_size_bytes,
                copy.file_hash_sha256,
            ):
                raise StoreUnavailable()
            return await self._commit_restore(user_id, product_id, slot_name, copy_id, etag, request_id)
        except BaseException:
            await self._abandon(user_id, copy_id)
            raise

    async def _commit_restore(
        self,
        user_id: uuid.UUID,
        product_id: uuid.UUID,
        slot_name: str,
        copy_id: uuid.UUID,
        etag: str,
        request_id: uuid.UUID | None,
    ) -> Restored:
        key = request_key(user_id, "RestoreSaveGameVersion", request_id)
        async with self._deps.uow() as uow:
            repo = SaveRepository(uow)
            first = await replay.claim(uow, key, Restored)
            await repo.lock_owner(user_id, product_id)
            now = self._deps.clock()
            copy = await repo.get(user_id, copy_id, lock=True)
            if first is not None:  # a concurrent duplicate committed first: ours goes
                if copy is not None and copy.status == PENDING:
                    await repo.forget(copy, delete_after=now)
                    await uow.commit()
                return first
            if copy is None or copy.status != PENDING:
                raise StoreUnavailable()  # the sweeper released it meanwhile: retrying is safe
            await self._check_etag(repo, user_id, product_id, slot_name, etag)
            head = await repo.head(user_id, product_id, slot_name)
            copy.base_version = head.version_number if head else 0
            await self._make_head(uow, repo, copy, head, now)
            result = Restored(await self._slot(repo, user_id, product_id, slot_name), view(copy))
            await replay.remember(uow, key, result)
            await uow.commit()
        return result

    async def _abandon(self, user_id: uuid.UUID, savegame_id: uuid.UUID) -> None:
        """Releases a restore's reservation that will not be committed (a no-op once committed)."""
        async with self._deps.uow() as uow:
            repo = SaveRepository(uow)
            row = await repo.get(user_id, savegame_id, lock=True)
            if row is not None and row.status == PENDING:
                await repo.forget(row, delete_after=self._deps.clock())
                await uow.commit()

    async def _retained(
        self,
        repo: SaveRepository,
        user_id: uuid.UUID,
        product_id: uuid.UUID,
        slot_name: str,
        version_number: int,
    ) -> SaveGameRow:
        source = await repo.version(user_id, product_id, slot_name, version_number)
        if source is not None:
            return source
        if await repo.head(user_id, product_id, slot_name) is None:
            raise NotFound(f"no save slot {slot_name!r}", reason="SAVEGAME_SLOT_NOT_FOUND")
        raise savegame_not_found(f"version {version_number} of slot {slot_name!r} is not retained")

    async def _slot(
        self, repo: SaveRepository, user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str
    ) -> Slot:
        slots = slots_of(product_id, await repo.shown(user_id, product_id, slot_name))
        return slots[0] if slots else Slot(product_id, slot_name, None, [], [], rules.slot_etag(None, []))

    async def _check_etag(
        self, repo: SaveRepository, user_id: uuid.UUID, product_id: uuid.UUID, slot_name: str, etag: str
    ) -> None:
        if etag and (await self._slot(repo, user_id, product_id, slot_name)).etag != etag:
            raise Aborted(
                "the slot changed since it was listed; list it again", metadata={"slotName": slot_name}
            )
