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

CATEGORY_NAME_MAX = 64

# UpdateLibraryItem mask paths (proto names) and the JSON spellings accepted for them.
IS_HIDDEN, CATEGORY_IDS, INSTALLATION_STATUS = "is_hidden", "category_ids", "installation_status"
UPDATABLE_FIELDS = frozenset({IS_HIDDEN, CATEGORY_IDS, INSTALLATION_STATUS})
_MASK_ALIASES = {
    "isHidden": IS_HIDDEN,
    "categoryIds": CATEGORY_IDS,
    "installationStatus": INSTALLATION_STATUS,
}


def fields_to_update(
    mask_paths: Iterable[str], *, has_is_hidden: bool, has_category_ids: bool, has_installation_status: bool
) -> tuple[frozenset[str], list[str]]:
    """The fields an UpdateLibraryItem changes (AIP-134) and the mask paths that name no field.

    With no mask, the fields present in the request change; `*` means every updatable field."""
    paths = [p.strip() for p in mask_paths if p.strip()]
    if not paths:
        present = {
            IS_HIDDEN: has_is_hidden,
            CATEGORY_IDS: has_category_ids,
            INSTALLATION_STATUS: has_installation_status,
        }
        return frozenset(name for name, given in present.items() if given), []
    if "*" in paths:
        return UPDATABLE_FIELDS, [p for p in paths if p != "*"]
    names = [_MASK_ALIASES.get(p, p) for p in paths]
    unknown = [p for p, name in zip(paths, names, strict=True) if name not in UPDATABLE_FIELDS]
    return frozenset(n for n in names if n in UPDATABLE_FIELDS), unknown


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
    order_id = str(data["orderId"]).strip()
    if not order_id:
        raise ValueError("orderId is empty")
    product_ids = list(dict.fromkeys(uuid.UUID(str(item["productId"])) for item in data["items"]))
    if not product_ids:
        raise ValueError("the order has no items")
    paid_at = parse_time(data["timestamp"]) if data.get("timestamp") else event_time
    return PaidOrder(uuid.UUID(str(data["userId"])), order_id, product_ids, paid_at)


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
