"""SQL of family sharing: links, and the borrowed items of a borrower's library (`library_items` rows with
`lender_user_id` set, acquisition `family_shared`).

What a borrower's library should hold is one statement (`_WANTED`): every game an active lender owns
(not itself borrowed) that the borrower does not own, the earliest-accepted lender first when several
lend it; a DLC only with its base game from the same lender and never when the borrower owns that base.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from server.core.db import Db
from server.library import family_rules as rules
from server.library import keyset
from server.library.family_views import FamilyLinkView, LibraryUse

_LINK = (
    "l.link_id, l.owner_user_id, l.shared_user_id, l.status, l.end_reason, l.created_at, l.updated_at, "
    "l.accepted_at"
)
_LINKS = keyset.Listing(
    _LINK,
    "family_links l",
    [keyset.time_key("l.created_at", descending=True), keyset.id_key("l.link_id", descending=True)],
)


def _link_view(row: Sequence[Any]) -> FamilyLinkView:
    return FamilyLinkView(*row[:8])


async def lock(db: Db, scope: str, user_id: uuid.UUID) -> None:
    """A transaction-scoped lock on one user's part of family sharing (`scope`: `owner`, `borrower`,
    `library`); it also covers users with no rows yet."""
    await db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"family:{scope}:{user_id}",))


async def insert_link(db: Db, owner: uuid.UUID, shared: uuid.UUID, now: datetime) -> FamilyLinkView | None:
    """The new pending link, or None when a pending or active link of the pair exists."""
    row = await db.one(
        "INSERT INTO family_links AS l "
        "(link_id, owner_user_id, shared_user_id, status, created_at, updated_at) "
        "VALUES (%s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (owner_user_id, shared_user_id) WHERE status <> 'revoked' DO NOTHING "
        f"RETURNING {_LINK}",
        (uuid.uuid4(), owner, shared, rules.PENDING, now, now),
    )
    return None if row is None else _link_view(row)


async def lock_link(db: Db, user_id: uuid.UUID, link_id: uuid.UUID) -> FamilyLinkView | None:
    """The link, locked, if the user is one of its two sides; else None (as if absent)."""
    row = await db.one(
        f"SELECT {_LINK} FROM family_links l WHERE l.link_id = %s "
        "AND (l.owner_user_id = %s OR l.shared_user_id = %s) FOR UPDATE",
        (link_id, user_id, user_id),
    )
    return None if row is None else _link_view(row)


async def set_status(
    db: Db, link_id: uuid.UUID, status: str, end_reason: str | None, now: datetime
) -> FamilyLinkView:
    accepted = now if status == rules.ACTIVE else None
    row = await db.one(
        "UPDATE family_links l SET status = %s, end_reason = %s, updated_at = %s, "
        "accepted_at = coalesce(%s, l.accepted_at) "
        f"WHERE l.link_id = %s RETURNING {_LINK}",
        (status, end_reason, now, accepted, link_id),
    )
    assert row is not None
    return _link_view(row)


async def count_active(db: Db, owner: uuid.UUID) -> int:
    return await db.value(
        "SELECT count(*) FROM family_links WHERE owner_user_id = %s AND status = 'active'", (owner,)
    )


async def list_links(
    db: Db,
    user_id: uuid.UUID,
    *,
    as_owner: bool,
    as_shared_user: bool,
    status: str | None,
    cursor: list[Any] | None,
    page_size: int,
) -> tuple[list[FamilyLinkView], list[Any] | None, int]:
    sides = [
        side
        for side, wanted in (("l.owner_user_id", as_owner), ("l.shared_user_id", as_shared_user))
        if wanted
    ]
    conditions = ["(" + " OR ".join(f"{side} = %s" for side in sides) + ")"]
    params: list[Any] = [user_id] * len(sides)
    if status is not None:
        conditions.append("l.status = %s")
        params.append(status)
    rows, next_cursor, total = await _LINKS.page(db, conditions, params, cursor, page_size)
    return [_link_view(row) for row in rows], next_cursor, total


# ---- borrowed items ----

_OWNED_BY = (
    "SELECT product_id FROM library_items WHERE user_id = {who} AND revoked_at IS NULL "
    "AND acquisition_type <> 'family_shared'"
)
_WANTED = f"""
SELECT DISTINCT ON (li.product_id) li.product_id, li.user_id
FROM family_links fl
JOIN library_items li ON li.user_id = fl.owner_user_id
LEFT JOIN products p ON p.product_id = li.product_id
WHERE fl.shared_user_id = %(borrower)s AND fl.status = 'active'
  AND li.revoked_at IS NULL AND li.acquisition_type <> 'family_shared'
  AND li.product_id NOT IN ({_OWNED_BY.format(who="%(borrower)s")})
  AND (coalesce(p.product_type, '') <> 'dlc' OR (
        p.base_product_id NOT IN ({_OWNED_BY.format(who="%(borrower)s")})
        AND p.base_product_id IN ({_OWNED_BY.format(who="li.user_id")})))
ORDER BY li.product_id, fl.accepted_at, fl.owner_user_id
"""
_BORROWED = (
    "SELECT product_id, lender_user_id FROM library_items "
    "WHERE user_id = %s AND revoked_at IS NULL AND acquisition_type = 'family_shared'"
)


async def wanted_borrowed(db: Db, borrower: uuid.UUID) -> dict[uuid.UUID, uuid.UUID]:
    """What the borrower's library should hold from lenders: product → lender."""
    return dict(await db.all(_WANTED, {"borrower": borrower}))


async def borrowed(db: Db, borrower: uuid.UUID) -> dict[uuid.UUID, uuid.UUID]:
    """What the borrower's library holds from lenders now: product → lender."""
    return dict(await db.all(_BORROWED, (borrower,)))


async def add_borrowed(db: Db, borrower: uuid.UUID, lent: dict[uuid.UUID, uuid.UUID], now: datetime) -> None:
    """Adds borrowed items, reusing a revoked row of the product (its playtime is the borrower's own)."""
    await db.execute(
        "INSERT INTO library_items AS li (id, user_id, product_id, acquisition_type, acquisition_timestamp, "
        "added_to_library_at, lender_user_id) "
        "SELECT gen_random_uuid(), %s, p, 'family_shared', %s, %s, lender "
        "FROM unnest(%s::uuid[], %s::uuid[]) AS t(p, lender) "
        "ON CONFLICT (user_id, product_id) DO UPDATE SET acquisition_type = 'family_shared', "
        "acquisition_timestamp = excluded.acquisition_timestamp, "
        "added_to_library_at = excluded.added_to_library_at, "
        "lender_user_id = excluded.lender_user_id, revoked_at = NULL, revoke_reason = NULL, "
        "revoked_order_id = NULL, order_id = NULL, is_hidden = false "
        "WHERE li.revoked_at IS NOT NULL",
        (borrower, now, now, list(lent), list(lent.values())),
    )


async def remove_borrowed(
    db: Db, borrower: uuid.UUID, product_ids: Sequence[uuid.UUID], now: datetime
) -> None:
    await db.execute(
        "UPDATE library_items SET revoked_at = %s, revoke_reason = %s, "
        "installation_status = 'not_installed', installed_version_id = NULL "
        "WHERE user_id = %s AND product_id = ANY(%s) AND acquisition_type = 'family_shared' "
        "AND revoked_at IS NULL",
        (now, rules.NO_LONGER_SHARED, borrower, list(product_ids)),
    )


async def relend(db: Db, borrower: uuid.UUID, lent: dict[uuid.UUID, uuid.UUID]) -> None:
    await db.execute(
        "UPDATE library_items li SET lender_user_id = t.lender "
        "FROM unnest(%s::uuid[], %s::uuid[]) AS t(p, lender) "
        "WHERE li.user_id = %s AND li.product_id = t.p AND li.acquisition_type = 'family_shared' "
        "AND li.revoked_at IS NULL",
        (list(lent), list(lent.values()), borrower),
    )


async def family_of(db: Db, user_id: uuid.UUID) -> list[uuid.UUID]:
    """The libraries a change of the user's own games affects: of everyone borrowing from the user, and the
    user's own while they borrow from anyone. Empty for a user without active links."""
    rows = await db.all(
        "SELECT shared_user_id FROM family_links WHERE owner_user_id = %(user)s AND status = 'active' "
        "UNION SELECT %(user)s WHERE EXISTS (SELECT 1 FROM family_links "
        "WHERE shared_user_id = %(user)s AND status = 'active')",
        {"user": user_id},
    )
    return [row[0] for row in rows]


_LIBRARY_USE = """
WITH me AS (
  SELECT lender_user_id FROM library_items
  WHERE user_id = %(user)s AND product_id = %(product)s AND revoked_at IS NULL
)
SELECT true, me.lender_user_id, NULL::uuid FROM me
UNION ALL
SELECT false, li.user_id, li.product_id FROM me, library_items li
WHERE li.lender_user_id = coalesce(me.lender_user_id, %(user)s) AND li.revoked_at IS NULL
"""


async def library_use(db: Db, user_id: uuid.UUID, product_id: uuid.UUID) -> LibraryUse | None:
    """Which library a play session of the user's product uses and who else plays from it; None when the
    user does not have the product."""
    rows = await db.all(_LIBRARY_USE, {"user": user_id, "product": product_id})
    mine = [row for row in rows if row[0]]
    if not mine:
        return None
    lender = mine[0][1]
    borrowed: dict[uuid.UUID, set[uuid.UUID]] = {}
    for is_mine, borrower, product in rows:
        if not is_mine:
            borrowed.setdefault(borrower, set()).add(product)
    return LibraryUse(lender=lender, owner=lender or user_id, borrowed=borrowed)
