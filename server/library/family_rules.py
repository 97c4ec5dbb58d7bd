"""Family sharing rules (SPEC §6): the link state machine, what a borrower's library should hold, and the
event payloads. Pure functions; the clock is passed in.

State machine (`action` by the side allowed to take it):

    pending_approval --accept (shared user)--> active
    pending_approval --decline (shared user)--> revoked / declined
    pending_approval --cancel (owner)--------> revoked / cancelled
    active ----------revoke (either side)----> revoked / revoked_by_owner | revoked_by_shared_user

Anything else is FAILED_PRECONDITION FAMILY_SHARING_LINK_INVALID_STATE; a party taking an action that is
the other side's (the owner accepting their own invite) is PERMISSION_DENIED.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.core.errors import FailedPrecondition, PermissionDenied, ResourceExhausted
from server.core.events.cloudevents import rfc3339

PENDING, ACTIVE, REVOKED = "pending_approval", "active", "revoked"
STATUSES = (PENDING, ACTIVE, REVOKED)
DECLINED, CANCELLED = "declined", "cancelled"
REVOKED_BY_OWNER, REVOKED_BY_SHARED_USER = "revoked_by_owner", "revoked_by_shared_user"

FAMILY_SHARED = "family_shared"  # the acquisition type of a borrowed library item
# `item.revoked` reason of a borrowed game leaving a library (the link ended, the lender lost the game).
NO_LONGER_SHARED = "family_sharing_ended"
RECLAIMED = "familySharedGameReclaimed"  # notification to a borrower whose play the owner interrupts

LINK_INVITED = "com.platform.library.family.link.invited.v1"
_EVENT_PREFIX = "com.platform.library.family.link."


class Side(enum.Enum):
    OWNER = "owner"
    SHARED_USER = "shared_user"


class Action(enum.Enum):
    ACCEPT = "accepted"
    DECLINE = "declined"
    CANCEL = "cancelled"
    REVOKE = "revoked"

    @property
    def event_type(self) -> str:
        return f"{_EVENT_PREFIX}{self.value}.v1"


@dataclass(frozen=True, slots=True)
class Transition:
    status: str
    end_reason: str | None


class LinkInvalidState(FailedPrecondition):
    reason = "FAMILY_SHARING_LINK_INVALID_STATE"


class LinkLimitExceeded(ResourceExhausted):
    """More active links than an owner may have: RESOURCE_EXHAUSTED, as quotas are (SPEC §4)."""

    reason = "FAMILY_SHARING_LINK_LIMIT_EXCEEDED"

    def __init__(self, limit: int):
        super().__init__(
            f"the owner already has {limit} active family links (the limit)", metadata={"limit": str(limit)}
        )


# (action, status before) → (status after, end reason); a revoke's reason names the side.
_MACHINE: Mapping[tuple[Action, str], tuple[str, str | None]] = {
    (Action.ACCEPT, PENDING): (ACTIVE, None),
    (Action.DECLINE, PENDING): (REVOKED, DECLINED),
    (Action.CANCEL, PENDING): (REVOKED, CANCELLED),
    (Action.REVOKE, ACTIVE): (REVOKED, None),
}
# The one side that may take an action (revoke: either).
_ALLOWED_SIDE = {Action.ACCEPT: Side.SHARED_USER, Action.DECLINE: Side.SHARED_USER, Action.CANCEL: Side.OWNER}


def transition(action: Action, status: str, side: Side) -> Transition:
    """The link's new state when `side` takes `action` on a link in `status`; raises when not allowed."""
    allowed = _ALLOWED_SIDE.get(action)
    if allowed is not None and allowed is not side:
        raise PermissionDenied(f"only the {allowed.value.replace('_', ' ')} of a link can do that")
    step = _MACHINE.get((action, status))
    if step is None:
        raise LinkInvalidState(
            f"a {status} family link cannot be {action.value}", metadata={"status": status.upper()}
        )
    to, end_reason = step
    if action is Action.REVOKE:
        end_reason = REVOKED_BY_OWNER if side is Side.OWNER else REVOKED_BY_SHARED_USER
    return Transition(to, end_reason)


def link_payload(
    link_id: uuid.UUID,
    owner_user_id: uuid.UUID,
    shared_user_id: uuid.UUID,
    status: str,
    end_reason: str | None,
    when: datetime,
) -> dict[str, Any]:
    """`com.platform.library.family.link.*.v1` data."""
    return {
        "linkId": str(link_id),
        "ownerUserId": str(owner_user_id),
        "sharedUserId": str(shared_user_id),
        "status": status,
        "endReason": end_reason,
        "timestamp": rfc3339(when),
    }


@dataclass(frozen=True, slots=True)
class BorrowedChanges:
    """How a borrower's borrowed items must change: products to add (→ lender), products to remove, and
    products that stay but are now lent by another lender (→ new lender)."""

    added: dict[uuid.UUID, uuid.UUID]
    removed: list[uuid.UUID]
    relent: dict[uuid.UUID, uuid.UUID]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.relent)


def borrowed_changes(
    current: Mapping[uuid.UUID, uuid.UUID], wanted: Mapping[uuid.UUID, uuid.UUID]
) -> BorrowedChanges:
    """From the borrowed items a library holds (product → lender) to what it should hold."""
    return BorrowedChanges(
        added={p: lender for p, lender in wanted.items() if p not in current},
        removed=sorted(p for p in current if p not in wanted),
        relent={p: lender for p, lender in wanted.items() if p in current and current[p] != lender},
    )


def lock_order(user_ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    """Distinct users in the one order every unit of work locks borrowers in (no deadlocks)."""
    return sorted(set(user_ids), key=str)
