"""Tables of the event machinery: the outbox, its dead letters, and the idempotent consumers' processed-event
ledger and dead letters."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Computed,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base
from server.core.events.channels import OUTBOX_PARTITIONS


class OutboxMessage(Base):
    __tablename__ = "outbox"

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    channel: Mapped[str] = mapped_column(String(16))
    # Kafka topic, or the Redis stream key for a notification.
    topic: Mapped[str] = mapped_column(Text)
    # Partition key: the user id.
    key: Mapped[str] = mapped_column(Text)
    partition: Mapped[int] = mapped_column(
        SmallInteger, Computed(f"hashtext(key) & {OUTBOX_PARTITIONS - 1}", persisted=True)
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Failed deliveries the row itself caused (the broker answered and refused it); outages do not count.
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index(
            "ix_outbox_pending", "channel", "partition", "seq", postgresql_where=text("published_at IS NULL")
        ),
        Index("ix_outbox_published_at", "published_at", postgresql_where=text("published_at IS NOT NULL")),
    )


class OutboxDeadLetter(Base):
    """An outbox row that could not be published after bounded attempts, with the last error."""

    __tablename__ = "outbox_dead_letters"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    channel: Mapped[str] = mapped_column(String(16))
    topic: Mapped[str] = mapped_column(Text)
    key: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    dead_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OutboxLease(Base):
    """Who relays a partition of a channel (events/leases.py): the owner, its fencing epoch (one more at
    every change of hands), until when the lease holds unrenewed, and the owner's backend (a lease of a
    backend that is gone is free at once). One row per (channel, partition), made by the migration."""

    __tablename__ = "outbox_leases"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    partition: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    owner: Mapped[str | None] = mapped_column(Text)
    epoch: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    backend_pid: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("'-infinity'"))


class OutboxRelayMember(Base):
    """A live relay of a channel, renewed like its leases: the relays count each other for the fair share."""

    __tablename__ = "outbox_relay_members"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    owner: Mapped[str] = mapped_column(Text, primary_key=True)
    backend_pid: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ProcessedEvent(Base):
    __tablename__ = "processed_events"

    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class ConsumerDeadLetter(Base):
    """A Kafka record a consumer could not handle after bounded attempts: the raw bytes, where it was read
    and the last error (replayable by republishing the record)."""

    __tablename__ = "consumer_dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    consumer: Mapped[str] = mapped_column(String(100))
    topic: Mapped[str] = mapped_column(Text)
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[bytes | None] = mapped_column(LargeBinary)
    event_id: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    dead_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        UniqueConstraint(
            "consumer", "topic", "partition", "offset", name="uq_consumer_dead_letters_position"
        ),
    )
