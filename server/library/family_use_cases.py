"""Family sharing use cases (SPEC §6): links (invite, accept, decline, cancel, revoke) and the borrowed games
they put in a borrower's library.

Borrowed games are library items of the borrower (acquisition `family_shared`, `lender_user_id` set), so
everything that asks "does this user have the product" (CheckEntitlement, playtime, downloads, saves)
answers for them with no family knowledge, the borrower's playtime, hidden flag and categories are their
own, and the ListLibraryItems of a user without links runs exactly the statement it always did.
`reconcile_in` makes a borrower's borrowed items match their active links; it runs in the unit of work
that changes a link, and from `family_consumers` when a lender's (or borrower's) own games change.
Every borrowed game added or removed emits `item.added` / `item.revoked` (which cancels its downloads).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from server.core import replay
from server.core.deps import Deps
from server.core.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound, ProductAccessDenied
from server.core.pagination import decode_page_token, encode_page_token, query_fingerprint
from server.core.replay import request_key
from server.core.uow import UnitOfWork
from server.library import family_repository as repository
from server.library import family_rules as rules
from server.library.family_views import FamilyLinkView, LibraryUse
from server.library.rules import ITEM_ADDED, ITEM_REVOKED, item_added_payload, item_revoked_payload
from server.library.views import Page


def link_not_found() -> NotFound:
    return NotFound("family link not found", reason="FAMILY_SHARING_LINK_NOT_FOUND")


async def list_links(
    deps: Deps,
    user_id: uuid.UUID,
    *,
    side: rules.Side | None,
    status: str | None,
    page_size: int,
    page_token: str,
) -> Page[FamilyLinkView]:
    fingerprint = query_fingerprint("family-links", user_id, side.value if side else None, status)
    cursor = decode_page_token(page_token, fingerprint)
    async with deps.uow.read() as db:
        links, next_cursor, total = await repository.list_links(
            db,
            user_id,
            as_owner=side in (None, rules.Side.OWNER),
            as_shared_user=side in (None, rules.Side.SHARED_USER),
            status=status,
            cursor=cursor,
            page_size=page_size,
        )
    return Page(links, encode_page_token(next_cursor, fingerprint) if next_cursor else "", total)


async def create_link(
    deps: Deps, owner: uuid.UUID, shared_user: uuid.UUID, request_id: uuid.UUID | None
) -> FamilyLinkView:
    if owner == shared_user:
        raise InvalidArgument([FieldViolation("shared_user_id", "cannot share a library with oneself")])
    key = request_key(owner, "CreateFamilyLink", request_id)
    async with deps.uow() as uow:
        if (first := await replay.claim(uow, key, FamilyLinkView)) is not None:
            return first
        await repository.lock(uow.db, "owner", owner)
        await _check_limit(uow, deps, owner)
        now = deps.clock()
        link = await repository.insert_link(uow.db, owner, shared_user, now)
        if link is None:
            raise AlreadyExists(
                "a pending or active family link to this user exists",
                reason="FAMILY_SHARING_LINK_ALREADY_EXISTS",
            )
        _link_event(uow, rules.LINK_INVITED, link, now)
        await replay.remember(uow, key, link)
        await uow.commit()
    return link


async def change_link(
    deps: Deps, user_id: uuid.UUID, link_id: uuid.UUID, action: rules.Action, request_id: uuid.UUID | None
) -> FamilyLinkView:
    """Accept, decline, cancel or revoke (by either side) one of the user's links."""
    key = request_key(user_id, f"{action.name.title()}FamilyLink", request_id)
    async with deps.uow() as uow:
        if (first := await replay.claim(uow, key, FamilyLinkView)) is not None:
            return first
        link = await repository.lock_link(uow.db, user_id, link_id)
        if link is None:
            raise link_not_found()
        side = rules.Side.OWNER if link.owner_user_id == user_id else rules.Side.SHARED_USER
        step = rules.transition(action, link.status, side)
        if step.status == rules.ACTIVE:
            await repository.lock(uow.db, "owner", link.owner_user_id)
            await _check_limit(uow, deps, link.owner_user_id)
        now = deps.clock()
        changed = await repository.set_status(uow.db, link.link_id, step.status, step.end_reason, now)
        if link.status == rules.ACTIVE or changed.status == rules.ACTIVE:
            await reconcile_in(uow, link.shared_user_id, now)
        _link_event(uow, action.event_type, changed, now)
        await replay.remember(uow, key, changed)
        await uow.commit()
    return changed


async def _check_limit(uow: UnitOfWork, deps: Deps, owner: uuid.UUID) -> None:
    """Under the owner's lock: refuses another active link beyond FAMILY_MAX_ACTIVE_LINKS."""
    limit = deps.settings.family_max_active_links
    if await repository.count_active(uow.db, owner) >= limit:
        raise rules.LinkLimitExceeded(limit)


def _link_event(uow: UnitOfWork, event_type: str, link: FamilyLinkView, now: datetime) -> None:
    payload = rules.link_payload(
        link.link_id, link.owner_user_id, link.shared_user_id, link.status, link.end_reason, now
    )
    uow.add_event(event_type, link.owner_user_id, payload)


async def reconcile_in(uow: UnitOfWork, borrower: uuid.UUID, now: datetime) -> None:
    """Makes the borrower's borrowed items what their active links lend now (under the borrower's lock)."""
    await repository.lock(uow.db, "borrower", borrower)
    changes = rules.borrowed_changes(
        await repository.borrowed(uow.db, borrower), await repository.wanted_borrowed(uow.db, borrower)
    )
    if not changes:
        return
    if changes.removed:
        await repository.remove_borrowed(uow.db, borrower, changes.removed, now)
    if changes.added:
        await repository.add_borrowed(uow.db, borrower, changes.added, now)
    if changes.relent:
        await repository.relend(uow.db, borrower, changes.relent)
    for product_id in changes.removed:
        payload = item_revoked_payload(borrower, product_id, rules.NO_LONGER_SHARED, now)
        uow.add_event(ITEM_REVOKED, borrower, payload)
    for product_id, lender in changes.added.items():
        payload = item_added_payload(borrower, product_id, rules.FAMILY_SHARED, now)
        uow.add_event(ITEM_ADDED, borrower, {**payload, "lenderUserId": str(lender)})


async def library_changed_in(uow: UnitOfWork, user_id: uuid.UUID, now: datetime) -> None:
    """The user's own games changed (bought, granted, refunded): every library borrowing from them, and
    their own borrowed items, follow."""
    for borrower in rules.lock_order(await repository.family_of(uow.db, user_id)):
        await reconcile_in(uow, borrower, now)


async def library_use_in(uow: UnitOfWork, user_id: uuid.UUID, product_id: uuid.UUID) -> LibraryUse:
    """For a play session about to start: which library the user's product comes from and who else plays
    from it, under that library's lock when it is shared (so two starts decide one at a time).
    PERMISSION_DENIED PRODUCT_ACCESS_DENIED when the user does not have the product."""
    use = await repository.library_use(uow.db, user_id, product_id)
    if use is None:
        raise ProductAccessDenied(str(product_id))
    if use.shared:
        await repository.lock(uow.db, "library", use.owner)
    return use
