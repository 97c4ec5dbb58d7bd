"""playtime totals kept as they are credited; achievement unlock counters sharded

Playtime: `playtime_totals` (per user and product: microseconds covered by the union of every credited
interval, and the last played time) and `playtime_device_totals` (the same per device), so checkpoints
and statistics add what is new instead of re-reading a product's whole history. Backfilled from
`playtime_intervals` (gaps and islands).
Achievements: `achievement_unlock_counts`, one row per (achievement, shard); an unlock bumps its user's
shard, so launch-day unlocks do not queue on one counter row. The old counter moves to shard 0.

Revision ID: 0019_playtime_scale
Revises: 0015_merge_heads
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0019_playtime_scale"
down_revision = "0015_merge_heads"
branch_labels = None
depends_on = None

# Union of each group's intervals (touching ones joined), summed in microseconds.
_UNION_US = """
WITH ordered AS (
    SELECT {keys}, started_at, ended_at,
           max(ended_at) OVER (PARTITION BY {keys} ORDER BY started_at, ended_at
                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
    FROM playtime_intervals
), islands AS (
    SELECT {keys}, started_at, ended_at,
           count(*) FILTER (WHERE reach IS NULL OR started_at > reach)
               OVER (PARTITION BY {keys} ORDER BY started_at, ended_at) AS island
    FROM ordered
), spans AS (
    SELECT {keys}, min(started_at) AS s, max(ended_at) AS e FROM islands GROUP BY {keys}, island
)
SELECT {keys}, sum((extract(epoch FROM e - s) * 1000000)::bigint), max(e) FROM spans GROUP BY {keys}
"""


def upgrade() -> None:
    op.create_table(
        "playtime_totals",
        sa.Column("user_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("product_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("total_us", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("last_played_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "playtime_device_totals",
        sa.Column("user_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("product_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("total_us", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )
    op.execute(
        "INSERT INTO playtime_totals (user_id, product_id, total_us, last_played_at) "
        + _UNION_US.format(keys="user_id, product_id")
    )
    per_device = _UNION_US.format(keys="user_id, product_id, device_id")
    op.execute(
        "INSERT INTO playtime_device_totals (user_id, product_id, device_id, total_us) "
        f"SELECT user_id, product_id, device_id, total FROM ({per_device}) "
        "AS d(user_id, product_id, device_id, total, last)"
    )
    op.create_table(
        "achievement_unlock_counts",
        sa.Column("product_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("api_name", sa.String(128), primary_key=True),
        sa.Column("shard", sa.SmallInteger, primary_key=True),
        sa.Column("unlocked_count", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.ForeignKeyConstraint(
            ["product_id", "api_name"],
            ["achievement_definitions.product_id", "achievement_definitions.api_name"],
            name="fk_achievement_unlock_counts_definition",
            ondelete="CASCADE",
        ),
    )
    op.execute(
        "INSERT INTO achievement_unlock_counts (product_id, api_name, shard, unlocked_count) "
        "SELECT product_id, api_name, 0, unlocked_count FROM achievement_definitions WHERE unlocked_count > 0"
    )
    op.drop_column("achievement_definitions", "unlocked_count")


def downgrade() -> None:
    op.add_column(
        "achievement_definitions",
        sa.Column("unlocked_count", sa.BigInteger, server_default=sa.text("0"), nullable=False),
    )
    op.execute(
        "UPDATE achievement_definitions d SET unlocked_count = c.total FROM (SELECT product_id, api_name, "
        "sum(unlocked_count) AS total FROM achievement_unlock_counts GROUP BY 1, 2) c "
        "WHERE d.product_id = c.product_id AND d.api_name = c.api_name"
    )
    op.drop_table("achievement_unlock_counts")
    op.drop_table("playtime_device_totals")
    op.drop_table("playtime_totals")
