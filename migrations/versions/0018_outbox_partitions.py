"""outbox partitions, delivery attempts, dead letters; indexes for retention

The outbox gets a stored `partition` (a hash of the key, 32 partitions: server/core/events/tables.py
OUTBOX_PARTITIONS must agree) that relays own one at a time, the attempts and last error of a row the broker
refused, and the pending index per (channel, partition). Rows that can never be published and events that
can never be handled move to dead-letter tables. Retention prunes by time, so each pruned table gets an
index on its time column.

Revision ID: 0018_outbox_partitions
Revises: 0015_merge_heads
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0018_outbox_partitions"
down_revision = "0015_merge_heads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "outbox",
        sa.Column(
            "partition", sa.SmallInteger(), sa.Computed("hashtext(key) & 31", persisted=True), nullable=False
        ),
    )
    op.add_column("outbox", sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
    op.add_column("outbox", sa.Column("last_error", sa.Text(), nullable=True))
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.create_index(
        "ix_outbox_pending",
        "outbox",
        ["channel", "partition", "seq"],
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_index(
        "ix_outbox_published_at",
        "outbox",
        ["published_at"],
        postgresql_where=sa.text("published_at IS NOT NULL"),
    )
    op.create_table(
        "outbox_dead_letters",
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("dead_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_outbox_dead_letters"),
        sa.UniqueConstraint("id", name="uq_outbox_dead_letters_id"),
    )
    op.create_table(
        "consumer_dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=True),
        sa.Column("event_id", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("dead_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_consumer_dead_letters"),
        sa.UniqueConstraint(
            "consumer", "topic", "partition", "offset", name="uq_consumer_dead_letters_position"
        ),
    )
    op.create_index("ix_processed_events_processed_at", "processed_events", ["processed_at"])
    op.create_index("ix_request_replays_created_at", "request_replays", ["created_at"])
    op.create_index("ix_library_applied_orders_applied_at", "library_applied_orders", ["applied_at"])


def downgrade() -> None:
    op.drop_index("ix_library_applied_orders_applied_at", table_name="library_applied_orders")
    op.drop_index("ix_request_replays_created_at", table_name="request_replays")
    op.drop_index("ix_processed_events_processed_at", table_name="processed_events")
    op.drop_table("consumer_dead_letters")
    op.drop_table("outbox_dead_letters")
    op.drop_index("ix_outbox_published_at", table_name="outbox")
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.create_index("ix_outbox_pending", "outbox", ["seq"], postgresql_where=sa.text("published_at IS NULL"))
    op.drop_column("outbox", "last_error")
    op.drop_column("outbox", "attempts")
    op.drop_column("outbox", "partition")
