"""Which outbox partitions a relay owns: leases in `outbox_leases`, renewed by their owner, with a fencing
epoch.

A lease is one row per (channel, partition): its owner (`relay_identity`: host, pid and a random tag of one
channel relay), an `epoch` that grows by one each time the partition changes hands, and `expires_at`. The
owner renews its leases at every rebalance (OUTBOX_REBALANCE_SECONDS) and in the transaction that marks a
batch sent; a lease is free once it expired, its owner released it, or its owner's Postgres backend is gone
(a process that died: taken over at the next rebalance, without waiting for the expiry). A relay that hangs
(SIGSTOP, an event loop stuck) stops renewing, so its leases expire (OUTBOX_LEASE_SECONDS) and the others
take its partitions; the relays of a channel count each other by the member rows they renew the same way,
so a hung relay also stops counting in the fair share (ceil(partitions / live members)).

Fencing: a relay marks rows sent (or counts a refusal, or dead-letters) only in a transaction that first
renews the leases of the batch's partitions *with the epochs it read them under* (`confirm`). A relay that
wakes up after losing a lease finds the epoch changed, marks nothing of that partition and drops it; what it
had already sent before noticing is a duplicate the idempotent consumers (and the stream script) absorb.
Order per user holds: the new owner reads the rows the old one never marked, in `seq` order, and a lease
row locked by a confirming transaction cannot change hands until that transaction ends.

All times are the database's (`now()`), so the relays' clocks never need to agree.
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from collections.abc import Sequence

from psycopg import AsyncConnection

from server.core.events.channels import OUTBOX_PARTITIONS

# A lease is taken over when it expired, was released (owner NULL) or its owner's backend is gone.
_FREE = "(owner IS NULL OR expires_at < now() OR backend_pid NOT IN (SELECT pid FROM pg_stat_activity))"
_JOIN = """
INSERT INTO outbox_relay_members (channel, owner, backend_pid, expires_at)
VALUES (%(channel)s, %(owner)s, pg_backend_pid(), now() + %(lease)s * interval '1 second')
ON CONFLICT (channel, owner)
DO UPDATE SET backend_pid = excluded.backend_pid, expires_at = excluded.expires_at
"""
_LIVE_MEMBERS = f"""
WITH gone AS (DELETE FROM outbox_relay_members WHERE channel = %(channel)s AND {_FREE} RETURNING owner)
SELECT count(*) FROM outbox_relay_members
WHERE channel = %(channel)s AND owner NOT IN (SELECT owner FROM gone)
"""
_RENEW = """
UPDATE outbox_leases SET expires_at = now() + %(lease)s * interval '1 second', backend_pid = pg_backend_pid()
WHERE channel = %(channel)s AND owner = %(owner)s
RETURNING partition, epoch
"""
_RELEASE = """
UPDATE outbox_leases SET owner = NULL, backend_pid = NULL, expires_at = '-infinity'
WHERE channel = %(channel)s AND owner = %(owner)s AND partition = ANY(%(partitions)s)
"""
# Free partitions, searched from a place of the relay's own (relays joining at once rarely collide);
# SKIP LOCKED: a lease another relay is taking or confirming right now is not free.
_TAKE = f"""
UPDATE outbox_leases SET owner = %(owner)s, epoch = epoch + 1, backend_pid = pg_backend_pid(),
    expires_at = now() + %(lease)s * interval '1 second'
WHERE channel = %(channel)s AND partition IN (
    SELECT partition FROM outbox_leases WHERE channel = %(channel)s AND {_FREE}
    ORDER BY (partition + %(partitions)s - %(start)s) %% %(partitions)s LIMIT %(wanted)s
    FOR UPDATE SKIP LOCKED)
RETURNING partition, epoch
"""
# Renews (and locks) the leases still held under the epochs given, and marks the sent rows of exactly those
# partitions published, in one statement: the marking sees the renewal's result, in its transaction.
_CONFIRM = """
WITH held AS (
    UPDATE outbox_leases
    SET expires_at = now() + %(lease)s * interval '1 second', backend_pid = pg_backend_pid()
    WHERE channel = %(channel)s AND owner = %(owner)s
      AND (partition, epoch) IN (SELECT * FROM unnest(%(partitions)s::smallint[], %(epochs)s::bigint[]))
    RETURNING partition
), published AS (
    UPDATE outbox SET published_at = now()
    WHERE seq = ANY(%(published)s::bigint[]) AND partition IN (SELECT partition FROM held)
)
SELECT partition FROM held
"""
_LEAVE = """
WITH released AS (
    UPDATE outbox_leases SET owner = NULL, backend_pid = NULL, expires_at = '-infinity'
    WHERE channel = %(channel)s AND owner = %(owner)s
)
DELETE FROM outbox_relay_members WHERE channel = %(channel)s AND owner = %(owner)s
"""


def relay_identity() -> str:
    """Who owns a lease, as `outbox_leases.owner` shows it: host, process id and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class PartitionLeases:
    """The leases of one channel held by one relay (`owned`: partition -> epoch, refreshed by `rebalance`
    and `confirm`). Every method runs on the relay's own connection."""

    def __init__(self, channel: str, lease_seconds: float, partitions: int = OUTBOX_PARTITIONS):
        self.owner = relay_identity()
        self.owned: dict[int, int] = {}
        self._partitions = partitions
        self._start = uuid.uuid4().int % partitions
        self._params = {"channel": channel, "owner": self.owner, "lease": lease_seconds}

    async def rebalance(self, conn: AsyncConnection) -> dict[int, int]:
        """Renews this relay's membership and leases, releases the leases beyond its fair share and takes
        free ones up to it, in one transaction. Returns the leases owned now (read back, never assumed)."""
        params = self._params
        async with conn.transaction():
            await conn.execute(_JOIN, params)
            members = (await (await conn.execute(_LIVE_MEMBERS, params)).fetchone())[0]
            share = math.ceil(self._partitions / max(1, members))
            owned = dict(await (await conn.execute(_RENEW, params)).fetchall())
            beyond = sorted(owned)[share:]
            if beyond:
                await conn.execute(_RELEASE, {**params, "partitions": beyond})
                for partition in beyond:
                    del owned[partition]
            if len(owned) < share:
                wanted = share - len(owned)
                take = {**params, "partitions": self._partitions, "start": self._start, "wanted": wanted}
                taken = await conn.execute(_TAKE, take)
                owned.update(await taken.fetchall())
        self.owned = owned
        return owned

    async def confirm(
        self, conn: AsyncConnection, partitions: set[int], *, published: Sequence[int] = ()
    ) -> set[int]:
        """Renews and locks the leases of `partitions` still held under the epochs this relay knows, marks
        the outbox rows `published` (seqs) of those partitions published, and returns them; the others were
        lost (another relay took them over) and are dropped from `owned`. In the caller's transaction, if
        any: on an autocommit connection outside one, the statement is its own (one round trip)."""
        ordered = sorted(partitions)
        params = {
            **self._params,
            "partitions": ordered,
            "epochs": [self.owned[p] for p in ordered],
            "published": list(published),
        }
        cur = await conn.execute(_CONFIRM, params)
        held = {row[0] for row in await cur.fetchall()}
        for partition in partitions - held:
            self.owned.pop(partition, None)
        return held

    async def release_all(self, conn: AsyncConnection) -> None:
        """Gives every lease and the membership up (a relay stopping), so others take over at once."""
        await conn.execute(_LEAVE, self._params)
        self.owned = {}

    def forget(self) -> None:
        """The connection is gone: what is owned is read back at the next rebalance."""
        self.owned = {}
