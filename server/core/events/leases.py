"""Which outbox partitions a relay owns: Postgres session-level advisory locks on the relay's own connection.

One lock per (channel, partition): exactly one connection in the whole cluster holds it, so exactly one
process relays a partition at a time, and one user's rows (one partition) are relayed in order. When a
process dies its connection closes and Postgres releases its locks; the survivors take the partitions over
at their next rebalance. Each relay also holds a member lock, so every relay can count the relays of its
channel and keep its fair share (ceil(partitions / members)): it takes free partitions up to that share and
releases what it holds beyond it, between batches, never in the middle of one.

What a relay owns is read back from `pg_locks` at every rebalance rather than remembered, so the relay never
believes it holds a lock its session does not.
"""

from __future__ import annotations

import math

from psycopg import AsyncConnection

from server.core.events.channels import CHANNELS, OUTBOX_PARTITIONS

# First keys of the two-key advisory locks (that key space never overlaps the one-key locks used elsewhere).
_PARTITION_CLASS = 7150
_MEMBER_CLASS = 7160

_HOLDERS = """
SELECT objid::int, pid = pg_backend_pid() FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid::bigint = %s
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_MEMBERS = """
SELECT count(DISTINCT pid) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid::bigint = %s
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def partition_lock_class(channel: str) -> int:
    """The first key of a channel's partition locks (the second is the partition)."""
    return _PARTITION_CLASS + CHANNELS.index(channel)


class PartitionLeases:
    """The partitions of one channel held by one relay connection (`owned`, refreshed by `rebalance`)."""

    def __init__(self, channel: str, partitions: int = OUTBOX_PARTITIONS):
        self._partition_class = partition_lock_class(channel)
        self._member_class = _MEMBER_CLASS + CHANNELS.index(channel)
        self._partitions = partitions
        self.owned: frozenset[int] = frozenset()
        self._joined: AsyncConnection | None = None

    async def rebalance(self, conn: AsyncConnection) -> frozenset[int]:
        """Joins the channel's relays on `conn` (once per connection), then takes free partitions up to the
        fair share and releases any beyond it. Returns the partitions owned now."""
        if self._joined is not conn:
            await conn.execute("SELECT pg_advisory_lock(%s, pg_backend_pid())", (self._member_class,))
            self._joined = conn
        members = (await (await conn.execute(_MEMBERS, (self._member_class,))).fetchone())[0]
        share = math.ceil(self._partitions / max(1, members))
        holders = await (await conn.execute(_HOLDERS, (self._partition_class,))).fetchall()
        mine = sorted(p for p, is_mine in holders if is_mine)
        taken = {p for p, _ in holders}
        for partition in mine[share:]:
            await conn.execute("SELECT pg_advisory_unlock(%s, %s)", (self._partition_class, partition))
        owned = set(mine[:share])
        # Start the search at a different place per connection, so relays joining at once rarely collide.
        start = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0] % self._partitions
        for offset in range(self._partitions):
            if len(owned) >= share:
                break
            partition = (start + offset) % self._partitions
            if partition in taken:
                continue
            cur = await conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (self._partition_class, partition)
            )
            if (await cur.fetchone())[0]:
                owned.add(partition)
        self.owned = frozenset(owned)
        return self.owned

    def forget(self) -> None:
        """The connection is gone, and its locks with it."""
        self.owned = frozenset()
        self._joined = None
