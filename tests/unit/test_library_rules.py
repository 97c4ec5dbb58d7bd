"""Pure library rules: update masks, category names, name search, event payloads, reading the payment and
catalog events, and the replay store's JSON form of use-case results."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from server.core import replay
from server.library import rules
from server.library.views import CategoryView, GrantResult, LibraryItemView, ProductInfo

NOW = datetime(2026, 11, 22, 12, 30, 15, 123456, tzinfo=UTC)
USER, PRODUCT = uuid.UUID(int=7), uuid.UUID(int=8)


def test_without_a_mask_the_fields_present_in_the_request_change():
    fields, unknown = rules.fields_to_update(
        [], has_is_hidden=True, has_category_ids=False, has_installation_status=True
    )
    assert fields == {"is_hidden", "installation_status"} and unknown == []
    fields, _ = rules.fields_to_update(
        [], has_is_hidden=False, has_category_ids=False, has_installation_status=False
    )
    assert fields == frozenset()


def test_a_mask_names_the_fields_that_change_even_when_empty_in_the_request():
    fields, unknown = rules.fields_to_update(
        ["category_ids"], has_is_hidden=True, has_category_ids=False, has_installation_status=True
    )
    assert fields == {"category_ids"} and unknown == []


def test_mask_accepts_json_names_and_star_and_reports_unknown_paths():
    fields, unknown = rules.fields_to_update(
        ["isHidden", "categoryIds", "user_id", "is_hidden"],
        has_is_hidden=False,
        has_category_ids=False,
        has_installation_status=False,
    )
    assert fields == {"is_hidden", "category_ids"} and unknown == ["user_id"]
    fields, unknown = rules.fields_to_update(
        ["*"], has_is_hidden=False, has_category_ids=False, has_installation_status=False
    )
    assert fields == rules.UPDATABLE_FIELDS and unknown == []


@pytest.mark.parametrize(
    ("raw", "cleaned", "problem"),
    [
        ("  Favourites ", "Favourites", None),
        ("\tCo-op\n", "Co-op", None),
        ("   ", "", "is required"),
        ("x" * 64, "x" * 64, None),
        (" " + "x" * 64 + " ", "x" * 64, None),
        ("x" * 65, "x" * 65, "must be at most 64 characters"),
        ("bad\nname", "bad\nname", "must not contain control characters"),
    ],
)
def test_category_names_are_trimmed_and_checked(raw, cleaned, problem):
    assert rules.clean_category_name(raw) == cleaned
    assert rules.category_name_problem(cleaned) == problem


def test_name_search_matches_wildcards_literally():
    assert rules.name_search_pattern("dark") == "%dark%"
    assert rules.name_search_pattern("50%_off\\") == "%50\\%\\_off\\\\%"


def test_event_payloads_use_the_seed_camel_case_fields():
    assert rules.item_added_payload(USER, PRODUCT, "purchase", NOW) == {
        "userId": str(USER),
        "productId": str(PRODUCT),
        "acquisitionType": "purchase",
        "timestamp": "2026-11-22T12:30:15.123456Z",
    }
    assert rules.wishlist_payload(USER, PRODUCT, NOW) == {
        "userId": str(USER),
        "productId": str(PRODUCT),
        "timestamp": "2026-11-22T12:30:15.123456Z",
    }


def test_payment_event_is_read_into_an_order_with_distinct_products():
    other = uuid.UUID(int=9)
    order = rules.paid_order(
        {
            "userId": str(USER),
            "orderId": "order-1",
            "items": [
                {"productId": str(PRODUCT), "productType": "game"},
                {"productId": str(other), "productType": "dlc"},
                {"productId": str(PRODUCT), "productType": "game"},
            ],
            "timestamp": "2026-11-20T10:00:00+03:00",
        },
        event_time=NOW,
    )
    assert order.user_id == USER and order.order_id == "order-1"
    assert order.product_ids == [PRODUCT, other]
    assert order.paid_at == datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


def test_payment_event_without_timestamp_uses_the_event_time():
    order = rules.paid_order(
        {"userId": str(USER), "orderId": "o", "items": [{"productId": str(PRODUCT)}]}, event_time=NOW
    )
    assert order.paid_at == NOW


@pytest.mark.parametrize(
    "data",
    [
        {"orderId": "o", "items": [{"productId": str(PRODUCT)}]},
        {"userId": "not-a-uuid", "orderId": "o", "items": [{"productId": str(PRODUCT)}]},
        {"userId": str(USER), "orderId": " ", "items": [{"productId": str(PRODUCT)}]},
        {"userId": str(USER), "orderId": "o", "items": []},
        {"userId": str(USER), "orderId": "o", "items": [{"productId": "x"}]},
        {"userId": str(USER), "orderId": "o", "items": [{"productId": str(PRODUCT)}], "timestamp": 5},
    ],
)
def test_malformed_payment_events_are_refused(data):
    with pytest.raises((ValueError, KeyError, TypeError)):
        rules.paid_order(data, event_time=NOW)


def test_catalog_event_carries_only_the_fields_it_names():
    values = rules.catalog_product_values(
        {
            "productId": str(PRODUCT),
            "updatedFields": ["name", "genres"],
            "name": "Hades II",
            "genres": ["roguelike", "action"],
            "productType": "expansion",
            "updatedAt": "2026-11-21T08:00:00Z",
        },
        event_time=NOW,
    )
    assert values == {
        "product_id": PRODUCT,
        "name": "Hades II",
        "genres": ["roguelike", "action"],
        "product_type": "",
        "updated_at": datetime(2026, 11, 21, 8, 0, tzinfo=UTC),
    }
    assert rules.catalog_product_values({"productId": str(PRODUCT)}, event_time=NOW) == {
        "product_id": PRODUCT,
        "updated_at": NOW,
    }


def test_replay_store_round_trips_nested_results():
    item = LibraryItemView(
        id=str(uuid.uuid4()),
        product_id=str(PRODUCT),
        product=ProductInfo(product_id=str(PRODUCT), name="Celeste", genres=["platformer"], release_date=NOW),
        acquisition_type="gift",
        acquisition_timestamp=NOW,
        added_to_library_at=NOW + timedelta(seconds=1),
        last_played_timestamp=None,
        total_playtime_seconds=42,
        installation_status="installed",
        installed_version_id=None,
        is_hidden=True,
        category_ids=[str(uuid.UUID(int=1)), str(uuid.UUID(int=2))],
    )
    result = GrantResult([item], [PRODUCT])
    assert replay.from_json(GrantResult, replay.to_json(result)) == result
    category = CategoryView(str(uuid.UUID(int=3)), "RPG", NOW)
    assert replay.from_json(CategoryView, replay.to_json(category)) == category
