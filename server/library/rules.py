"""Pure library rules: stored enum values, update-mask resolution, name search, category names, the event
payloads, and reading the payment and catalog events. No I/O."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from server.core.events.cloudevents import rfc3339

# Stored product types (seed 000 §4.1 enum).
PRODUCT_TYPES = ("game", "dlc", "software", "soundtrack")

ITEM_ADDED = "com.platform.library.item.added.v1"
ITEM_REVOKED = "com.platform.library.item.revoked.v1"
WISHLIST_ITEM_ADDED = "com.platform.library.wishlist.item.added.v1"
WISHLIST_ITEM_REMOVED = "com.platform.library.wishlist.item.removed.v1"
WISHLIST_ITEM_UPDATED = "com.platform.library.wishlist.item.updated.v1"
WISHLIST_GAME_ON_SALE = "wishlistGameOnSale"  # WebSocket notification type (seed 000 §3.3)

# How an entitlement was revoked (stored `revoke_reason`; RevokeEntitlementRequest.Reason in lower case).
REFUND, CHARGEBACK = "refund", "chargeback"

CATEGORY_NAME_MAX = 64

# UpdateLibraryItem mask paths (proto names) and the JSON spellings accepted for them.
IS_HIDDEN, CATEGORY_IDS, INSTALLATION_STATUS = "is_hidden", "category_ids", "installation_status"
UPDATABLE_FIELDS = frozenset({IS_HIDDEN, CATEGORY_IDS, INSTALLATION_STATUS})
_MASK_ALIASES = {
    "isHidden": IS_HIDDEN,
    "categoryIds": CATEGORY_IDS,
    "installationStatus": INSTALLATION_STATUS,
}
# UpdateWishlistItem mask paths (the same in proto and JSON).
PRIORITY, NOTES = "priority", "notes"
# UpdateCategory's only mask path.
NAME = "name"


def resolve_mask(
    mask_paths: Iterable[str], present: Mapping[str, bool], aliases: Mapping[str, str] | None = None
) -> tuple[frozenset[str], list[str]]:
    """The fields an AIP-134 update changes and the mask paths that name no field.

    `present`: every updatable field and whether the request carries it. With no mask, the fields present
    in the request change; `*` means every updatable field; `aliases` maps JSON spellings to proto names."""
    aliases = aliases or {}
    paths = [p.strip() for p in mask_paths if p.strip()]
    if not paths:
        return frozenset(name for name, given in present.items() if given), []
    if "*" in paths:
        return frozenset(present), [p for p in paths if p != "*"]
    names = [aliases.get(p, p) for p in paths]
    unknown = [p for p, name in zip(paths, names, strict=True) if name not in present]
    return frozenset(n for n in names if n in present), unknown


def fields_to_update(
    mask_paths: Iterable[str], *, has_is_hidden: bool, has_category_ids: bool, has_installation_status: bool
) -> tuple[frozenset[str], list[str]]:
    """The fields an UpdateLibraryItem changes (AIP-134) and the mask paths that name no field."""
    present = {
        IS_HIDDEN: has_is_hidden,
        CATEGORY_IDS: has_category_ids,
        INSTALLATION_STATUS: has_installation_status,
    }
    return resolve_mask(mask_paths, present, _MASK_ALIASES)


def clean_category_name(raw: str) -> str:
    """The stored form of a category name: surrounding whitespace trimmed."""
    return raw.strip()


def category_name_problem(name: str) -> str | None:
    """Why a (cleaned) category name is refused, or None."""
    if not name:
        return "is required"
    if len(name) > CATEGORY_NAME_MAX:
        return f"must be at most {CATEGORY_NAME_MAX} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "must not contain control characters"
    return None


def name_search_pattern(search: str) -> str:
    """An ILIKE pattern matching `search` literally anywhere in the name (`%`, `_` and `\\` escaped)."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def item_added_payload(
    user_id: uuid.UUID, product_id: uuid.UUID, acquisition_type: str, when: datetime
) -> dict[str, Any]:
    """`com.platform.library.item.added.v1` data (seed 000 §5.1)."""
    return {
        "userId": str(user_id),
        "productId": str(product_id),
        "acquisitionType": acquisition_type,
        "timestamp": rfc3339(when),
    }


def item_revoked_payload(
    user_id: uuid.UUID, product_id: uuid.UUID, reason: str, when: datetime
) -> dict[str, Any]:
    """`com.platform.library.item.revoked.v1` data (shaped like item.added; seed 000 names no payload)."""
    return {
        "userId": str(user_id),
        "productId": str(product_id),
        "reason": reason,
        "timestamp": rfc3339(when),
    }


def wishlist_payload(user_id: uuid.UUID, product_id: uuid.UUID, when: datetime) -> dict[str, Any]:
    """`com.platform.library.wishlist.item.added.v1` / `.removed.v1` data (seed 000 §5.1)."""
    return {"userId": str(user_id), "productId": str(product_id), "timestamp": rfc3339(when)}


def wishlist_updated_payload(
    user_id: uuid.UUID, product_id: uuid.UUID, priority: int, notes: str, when: datetime
) -> dict[str, Any]:
    """`com.platform.library.wishlist.item.updated.v1` data: the item's values after the update."""
    return {**wishlist_payload(user_id, product_id, when), "priority": priority, "notes": notes}


def order_key(raw: Any) -> str:
    """The one idempotency key of an order, whoever names it (GrantEntitlements, the payment events): the
    canonical UUID form when the id is a UUID in any spelling, else the id with surrounding whitespace
    trimmed. ValueError when empty."""
    text = str(raw).strip()
    if not text:
        raise ValueError("orderId is empty")
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text


@dataclass(frozen=True)
class PaidOrder:
    """What `com.platform.payment.transaction.completed.v1` grants."""

    user_id: uuid.UUID
    order_id: str
    product_ids: list[uuid.UUID]
    paid_at: datetime


def parse_time(value: Any) -> datetime:
    """An RFC 3339 / ISO 8601 timestamp from an event payload, as an aware UTC datetime."""
    if not isinstance(value, str):
        raise ValueError("timestamp must be a string")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def paid_order(data: Mapping[str, Any], *, event_time: datetime) -> PaidOrder:
    """Reads the payment event's data (seed 000 §5.2); ValueError/KeyError/TypeError when malformed."""
    product_ids = _order_products(data["items"])
    if not product_ids:
        raise ValueError("the order has no items")
    paid_at = parse_time(data["timestamp"]) if data.get("timestamp") else event_time
    return PaidOrder(uuid.UUID(str(data["userId"])), order_key(data["orderId"]), product_ids, paid_at)


def _order_products(items: Any) -> list[uuid.UUID]:
    return list(dict.fromkeys(uuid.UUID(str(item["productId"])) for item in items))


@dataclass(frozen=True)
class RefundedOrder:
    """What `com.platform.payment.transaction.refunded.v1` revokes: the order's items that the user still
    holds from that order (`product_ids` None: all of them)."""

    user_id: uuid.UUID
    order_id: str
    product_ids: list[uuid.UUID] | None
    reason: str
    refunded_at: datetime


def refunded_order(data: Mapping[str, Any], *, event_time: datetime) -> RefundedOrder:
    """Reads the refund event's data, shaped like the purchase event's (`userId`, `orderId`, optional
    `items` for a partial refund, optional `reason` `refund` | `chargeback`, `timestamp`)."""
    items = data.get("items")
    product_ids = _order_products(items) if items else None
    reason = CHARGEBACK if data.get("reason") == CHARGEBACK else REFUND
    refunded_at = parse_time(data["timestamp"]) if data.get("timestamp") else event_time
    return RefundedOrder(
        uuid.UUID(str(data["userId"])), order_key(data["orderId"]), product_ids, reason, refunded_at
    )


# Catalog payload keys (camelCase) → product cache columns, with how to read each value.
_CATALOG_FIELDS = {
    "name": ("name", str),
    "productType": ("product_type", lambda v: v if v in PRODUCT_TYPES else ""),
    "coverImageUrl": ("cover_image_url", str),
    "iconUrl": ("icon_url", str),
    "developer": ("developer", str),
    "publisher": ("publisher", str),
    "releaseDate": ("release_date", lambda v: parse_time(v) if v else None),
    "genres": ("genres", lambda v: [str(g) for g in v]),
    "baseProductId": ("base_product_id", lambda v: uuid.UUID(str(v)) if v else None),
}


def catalog_product_values(data: Mapping[str, Any], *, event_time: datetime) -> dict[str, Any]:
    """Product cache columns from `com.platform.catalog.product.updated.v1` data: the product id, the
    metadata fields the payload carries (only those; others keep their cached value) and `updated_at`
    (the payload's `updatedAt`, else the event time) for the staleness check."""
    values: dict[str, Any] = {"product_id": uuid.UUID(str(data["productId"]))}
    for key, (column, read) in _CATALOG_FIELDS.items():
        if key in data and data[key] is not None:
            values[column] = read(data[key])
    values["updated_at"] = parse_time(data["updatedAt"]) if data.get("updatedAt") else event_time
    return values


@dataclass(frozen=True)
class Sale:
    """A discount a catalog product event announces. `key` tells one sale from another: the catalog's
    `saleId` when it sends one, else the percentage and end time, so a product event re-sent or carrying
    other changes during the same sale announces nothing again."""

    product_id: uuid.UUID
    key: str
    percent: int
    product_name: str


def catalog_sale(data: Mapping[str, Any]) -> Sale | None:
    """The sale a `com.platform.catalog.product.updated.v1` payload carries (`discount`: {`percent` 1-100,
    optional `saleId`, optional `endsAt`}), or None when it carries no discount."""
    discount = data.get("discount")
    if not discount:
        return None
    if not isinstance(discount, Mapping):
        raise TypeError("discount must be an object")
    percent = discount["percent"]
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 < percent <= 100:
        raise ValueError("discount.percent must be a number in (0, 100]")
    percent = max(1, round(percent))
    ends = parse_time(discount["endsAt"]) if discount.get("endsAt") else None
    key = str(discount.get("saleId") or "").strip() or f"{percent}%:{rfc3339(ends) if ends else ''}"
    name = data.get("name")
    return Sale(uuid.UUID(str(data["productId"])), key, percent, name if isinstance(name, str) else "")


def sale_notification(product_id: uuid.UUID, product_name: str, percent: int) -> dict[str, Any]:
    """The `wishlistGameOnSale` payload (seed 000 §3.3)."""
    return {"productId": str(product_id), "productName": product_name, "discountPercent": f"{percent}%"}
