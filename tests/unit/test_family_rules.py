"""Family sharing rules: the link state machine over every (action, status, side), and the change from the
borrowed items a library holds to what its links lend."""

from __future__ import annotations

import itertools
import uuid

import pytest

from server.core.errors import PermissionDenied
from server.library import family_rules as rules
from server.library.family_rules import ACTIVE, PENDING, REVOKED, Action, Side

OWNER, SHARED = Side.OWNER, Side.SHARED_USER
LEGAL = {
    (Action.ACCEPT, PENDING, SHARED): (ACTIVE, None),
    (Action.DECLINE, PENDING, SHARED): (REVOKED, rules.DECLINED),
    (Action.CANCEL, PENDING, OWNER): (REVOKED, rules.CANCELLED),
    (Action.REVOKE, ACTIVE, OWNER): (REVOKED, rules.REVOKED_BY_OWNER),
    (Action.REVOKE, ACTIVE, SHARED): (REVOKED, rules.REVOKED_BY_SHARED_USER),
}
WRONG_SIDE = {Action.ACCEPT: OWNER, Action.DECLINE: OWNER, Action.CANCEL: SHARED}


@pytest.mark.parametrize("action,status,side", list(itertools.product(Action, rules.STATUSES, Side)))
def test_every_action_in_every_state_by_either_side(action, status, side):
    if (action, status, side) in LEGAL:
        step = rules.transition(action, status, side)
        assert (step.status, step.end_reason) == LEGAL[action, status, side]
    elif WRONG_SIDE.get(action) is side:
        with pytest.raises(PermissionDenied) as raised:
            rules.transition(action, status, side)
        assert raised.value.reason == "PERMISSION_DENIED"
    else:
        with pytest.raises(rules.LinkInvalidState) as raised:
            rules.transition(action, status, side)
        assert raised.value.reason == "FAMILY_SHARING_LINK_INVALID_STATE"
        assert raised.value.code.name == "FAILED_PRECONDITION"


def test_the_limit_is_resource_exhausted_with_its_own_reason():
    error = rules.LinkLimitExceeded(5)
    assert (error.code.name, error.reason, error.metadata) == (
        "RESOURCE_EXHAUSTED", "FAMILY_SHARING_LINK_LIMIT_EXCEEDED", {"limit": "5"},
    )  # fmt: skip


def test_borrowed_changes_add_remove_and_relend():
    a, b, c, d = (uuid.uuid4() for _ in range(4))
    lender, other = uuid.uuid4(), uuid.uuid4()
    changes = rules.borrowed_changes({a: lender, b: lender, c: lender}, {a: lender, c: other, d: other})
    assert changes.added == {d: other}
    assert changes.removed == [b]
    assert changes.relent == {c: other}
    assert not rules.borrowed_changes({a: lender}, {a: lender})


def test_lock_order_is_one_order_for_any_input():
    users = [uuid.uuid4() for _ in range(5)]
    assert rules.lock_order(users) == rules.lock_order(reversed(users + users[:2]))
