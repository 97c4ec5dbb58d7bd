"""Pure rules of the library extras: one order key, reading refund and sale events, update masks, and
achievement definitions from catalog events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from server.achievements.rules import catalog_definitions
from server.library.rules import (
    CHARGEBACK,
    REFUND,
    catalog_sale,
    order_key,
    refunded_order,
    resolve_mask,
    sale_notification,
)

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ORDER = uuid.UUID("5f0c7a9e-2b4d-4c1e-9a7b-3d2e1f0a9b8c")


def test_an_order_has_one_key_however_it_is_spelled():
    for spelling in (str(ORDER), str(ORDER).upper(), f"{{{ORDER}}}", ORDER.hex, f"  {ORDER} "):
        assert order_key(spelling) == str(ORDER)
    assert order_key(" ord-42 ") == "ord-42"  # not a UUID: kept as sent, trimmed
    with pytest.raises(ValueError):
        order_key("  ")


def test_a_refund_names_the_order_its_products_and_why():
    user, game = uuid.uuid4(), uuid.uuid4()
    data = {"userId": str(user), "orderId": str(ORDER).upper(), "items": [{"productId": str(game)}] * 2}
    refund = refunded_order(data, event_time=T0)
    assert (refund.user_id, refund.order_id, refund.product_ids) == (user, str(ORDER), [game])
    assert (refund.reason, refund.refunded_at) == (REFUND, T0)
    whole = refunded_order({"userId": str(user), "orderId": "x", "reason": "chargeback"}, event_time=T0)
    assert (whole.product_ids, whole.reason) == (None, CHARGEBACK)


def test_a_sale_is_keyed_by_its_sale_id_else_by_percent_and_end():
    product = uuid.uuid4()
    base = {"productId": str(product), "name": "Hades"}
    assert catalog_sale(base) is None
    named = catalog_sale({**base, "discount": {"percent": 30, "saleId": "summer"}})
    assert (named.key, named.percent, named.product_name) == ("summer", 30, "Hades")
    ends = catalog_sale({**base, "discount": {"percent": 30.4, "endsAt": "2026-06-10T00:00:00Z"}})
    assert (ends.key, ends.percent) == ("30%:2026-06-10T00:00:00Z", 30)
    for bad in ({"percent": 0}, {"percent": 101}, {"percent": True}, {"percent": "30"}):
        with pytest.raises(ValueError):
            catalog_sale({**base, "discount": bad})
    assert sale_notification(product, "Hades", 30) == {
        "productId": str(product),
        "productName": "Hades",
        "discountPercent": "30%",
    }


def test_update_masks_name_fields_or_default_to_those_present():
    present = {"priority": True, "notes": False}
    assert resolve_mask([], present) == (frozenset({"priority"}), [])
    assert resolve_mask(["notes"], present) == (frozenset({"notes"}), [])
    assert resolve_mask(["*"], present) == (frozenset({"priority", "notes"}), [])
    assert resolve_mask(["notes", "rating"], present) == (frozenset({"notes"}), ["rating"])


def test_catalog_definitions_only_when_updated_fields_name_them():
    product = uuid.uuid4()
    entry = {"apiName": "WIN", "displayName": "Win", "hidden": True, "maxProgress": 0}
    data = {"productId": str(product), "achievementDefinitions": [entry]}
    assert catalog_definitions(data) is None
    [definition] = catalog_definitions({**data, "updatedFields": ["achievement_definitions"]})
    assert (definition.product_id, definition.api_name, definition.hidden, definition.max_progress) == (
        str(product),
        "WIN",
        True,
        1,
    )
    for bad in ({"apiName": "no spaces", "displayName": "x"}, {"apiName": "A", "displayName": " "}):
        with pytest.raises(ValueError):
            catalog_definitions(
                {**data, "updatedFields": ["achievement_definitions"], "achievementDefinitions": [bad]}
            )
