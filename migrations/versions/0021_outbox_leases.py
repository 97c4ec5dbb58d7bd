"""outbox partition leases with fencing epochs; dead-letter changes announced

Relays owned partitions through session advisory locks, which a hung process (stopped, its event loop
stuck) keeps forever. Ownership becomes a lease per (channel, partition) in `outbox_leases` (owner, fencing
epoch, expiry, the owner's backend), one row each for the 2 channels x 32 partitions, and the relays of a
channel renew member rows in `outbox_relay_members` to count each other (server/core/events/leases.py).
Every change of a dead-letter table sends NOTIFY `dead_letters` (its table name), so each process
recounts its dead-letter gauges at once (server/core/events/dead_letters.py).

Revision ID: 0021_outbox_leases
Revises: 0020_merge_heads
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0021_outbox_leases"
down_revision = "0020_merge_heads"
branch_labels = None
depends_on = None

_DEAD_LETTER_TABLES = ("outbox_dead_letters", "consumer_dead_letters")


def upgrade() -> None:
    op.create_table(
        "outbox_leases",
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("partition", sa.SmallInteger(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("epoch", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("backend_pid", sa.Integer(), nullable=True),
        sa.Column(
            "expires_at", sa.DateTime(timezone=True), server_default=sa.text("'-infinity'"), nullable=False
        ),
        sa.PrimaryKeyConstraint("channel", "partition", name="pk_outbox_leases"),
    )
    op.execute(
        "INSERT INTO outbox_leases (channel, partition)"
        " SELECT c, p FROM unnest(ARRAY['kafka', 'notification']) AS c, generate_series(0, 31) AS p"
    )
    op.create_table(
        "outbox_relay_members",
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("backend_pid", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel", "owner", name="pk_outbox_relay_members"),
    )
    op.execute(
        "CREATE FUNCTION announce_dead_letters() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_notify('dead_letters', TG_TABLE_NAME); RETURN NULL; END $$"
    )
    for table in _DEAD_LETTER_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_announced AFTER INSERT OR DELETE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION announce_dead_letters()"
        )


def downgrade() -> None:
    for table in _DEAD_LETTER_TABLES:
        op.execute(f"DROP TRIGGER {table}_announced ON {table}")
    op.execute("DROP FUNCTION announce_dead_letters()")
    op.drop_table("outbox_relay_members")
    op.drop_table("outbox_leases")
