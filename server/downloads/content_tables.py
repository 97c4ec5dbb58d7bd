"""Tables of the chunk store and the published content: versions (with their branch), their files (seed
entity FileMetadata), the chunks each file is cut into, the store-wide chunk objects, the stored
results of installation verifications (seed entity VerificationResult), and what transfer plans keep: the
totals of each (version, installed version) pair and what a session's client has on disk."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base

STATE_UPLOADING = "uploading"
STATE_COMMITTED = "committed"


class ProductVersion(Base):
    """A version of a product on a branch. It is `uploading` from BeginVersionUpload until every chunk is
    verified, then `committed` (visible; the newest committed one of a branch is its latest)."""

    __tablename__ = "download_product_versions"
    __table_args__ = (
        UniqueConstraint("product_id", "version_name"),
        Index(
            "ix_download_product_versions_latest",
            "product_id",
            "branch",
            text("published_at DESC"),
            text("version_id DESC"),
            postgresql_where=text("state = 'committed'"),
        ),
    )

    version_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    version_name: Mapped[str] = mapped_column(String(64))
    branch: Mapped[str] = mapped_column(String(64))
    release_notes: Mapped[str] = mapped_column(Text, server_default="")
    state: Mapped[str] = mapped_column(String(16))
    total_size_bytes: Mapped[int] = mapped_column(BigInteger)
    file_count: Mapped[int] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer)
    # Distinct chunks the store did not hold before this version (counted at commit).
    new_chunk_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class VersionFile(Base):
    """One file of a version (seed FileMetadata): path, size and SHA-256."""

    __tablename__ = "download_version_files"
    __table_args__ = (
        UniqueConstraint("version_id", "path"),
        # Files on disk are matched by content (catalog.transfer_plan over installed files).
        Index("ix_download_version_files_sha256", "sha256", "size_bytes"),
    )

    file_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    version_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("download_product_versions.version_id", ondelete="CASCADE")
    )
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))


class FileChunk(Base):
    """The `position`-th chunk of a file: its byte range, the chunk id (SHA-256) holding those bytes and
    the compressed object serving it, a copy of its VersionChunk's (kept equal by the repository) so that
    a manifest page reads these rows alone."""

    __tablename__ = "download_file_chunks"

    file_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("download_version_files.file_id", ondelete="CASCADE"),
        primary_key=True,
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    chunk_id: Mapped[str] = mapped_column(String(64))
    offset: Mapped[int] = mapped_column(BigInteger)
    size_bytes: Mapped[int] = mapped_column(Integer)
    compressed_size_bytes: Mapped[int] = mapped_column(Integer)
    compressed_sha256: Mapped[str] = mapped_column(String(64))


class VersionChunk(Base):
    """A distinct chunk of a version and the compressed object that serves it: while uploading, the one the
    publisher declared; once committed, the verified one (whose sizes plans and manifests use)."""

    __tablename__ = "download_version_chunks"

    version_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("download_product_versions.version_id", ondelete="CASCADE"),
        primary_key=True,
    )
    chunk_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    compressed_size_bytes: Mapped[int] = mapped_column(Integer)
    compressed_sha256: Mapped[str] = mapped_column(String(64))


class StoredChunk(Base):
    """One compressed object of a chunk in S3 (key from chunking.object_key), shared by the whole store.

    `verified` is set only after the server read it back, decompressed it and found the SHA-256 of the
    content equal to `chunk_id`; a verified row is never changed again. Unverified rows are declarations
    whose object may or may not have been uploaded yet."""

    __tablename__ = "download_chunks"

    chunk_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    compressed_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    compressed_size_bytes: Mapped[int] = mapped_column(Integer)
    verified: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class VerificationResult(Base):
    """One VerifyInstallation outcome (seed VerificationResult); `damaged_files` lists what to re-fetch."""

    __tablename__ = "download_verification_results"
    __table_args__ = (Index(None, "user_id", "product_id"),)

    verification_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, default=uuid.uuid4
    )
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    version_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    status: Mapped[str] = mapped_column(String(32))
    checked_files_count: Mapped[int] = mapped_column(Integer)
    corrupted_files_count: Mapped[int] = mapped_column(Integer)
    missing_files_count: Mapped[int] = mapped_column(Integer)
    repaired_files_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    repair_size_bytes: Mapped[int] = mapped_column(BigInteger)
    files_requiring_redownload: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class UpdateNotice(Base):
    """That `download.update.available` went out for (user, product, version): it goes out once."""

    __tablename__ = "download_update_notices"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    version_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TransferTotals(Base):
    """What installing `version_id` over `installed_version_id` costs (catalog.TransferPlan's totals),
    computed the first time a client asks and read by key after: committed versions never change."""

    __tablename__ = "download_transfer_totals"

    version_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey(
            "download_product_versions.version_id",
            ondelete="CASCADE",
            name="fk_download_transfer_totals_version",
        ),
        primary_key=True,
    )
    installed_version_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey(
            "download_product_versions.version_id",
            ondelete="CASCADE",
            name="fk_download_transfer_totals_installed",
        ),
        primary_key=True,
    )
    bytes_to_download: Mapped[int] = mapped_column(BigInteger)
    chunks_to_download: Mapped[int] = mapped_column(Integer)
    bytes_to_write: Mapped[int] = mapped_column(BigInteger)
    files_to_write: Mapped[int] = mapped_column(Integer)


class SessionHeldChunk(Base):
    """A distinct chunk of a download's version that its client already has in files on disk (a session
    started with installed files rather than an installed version): not to be downloaded."""

    __tablename__ = "download_session_held_chunks"

    download_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey(
            "download_sessions.id",
            ondelete="CASCADE",
            deferrable=True,
            initially="DEFERRED",
            name="fk_download_session_held_chunks_session",
        ),
        primary_key=True,
    )
    chunk_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class SessionKeptFile(Base):
    """A file of a download's version that its client already has at its path with its content (a session
    started with installed files): not to be written."""

    __tablename__ = "download_session_kept_files"

    download_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey(
            "download_sessions.id",
            ondelete="CASCADE",
            deferrable=True,
            initially="DEFERRED",
            name="fk_download_session_kept_files_session",
        ),
        primary_key=True,
    )
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
