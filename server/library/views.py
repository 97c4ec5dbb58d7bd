"""What the library's use cases return: plain values (no ORM rows), so the servicer can map them to protos
and the replay store can keep them as JSON. Ids are canonical UUID text, as the reads select them and the
contract carries them. Fields are in the order of the columns the repository reads them from.

The values made per listed row are slotted dataclasses, not frozen ones (nobody changes them; a frozen
dataclass pays an `object.__setattr__` per field, several microseconds per row of a page of 50):
docs/ARCHITECTURE.md, "Database access"."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")


class ProductInfo(NamedTuple):
    """Cached catalog metadata. `product_type` is the catalog value (`game`, `dlc`, ...) or ''.

    A tuple of the product's columns, not a dataclass: the servicer's message cache compares it with the
    one it built a product's message from, as one tuple comparison (docs/ARCHITECTURE.md)."""

    product_id: str
    name: str = ""
    product_type: str = ""
    cover_image_url: str = ""
    icon_url: str = ""
    developer: str = ""
    publisher: str = ""
    release_date: datetime | None = None
    genres: Sequence[str] = ()
    updated_at: datetime | None = None
    base_product_id: str | None = None  # a DLC's base game


@dataclass(slots=True)
class LibraryItemView:
    id: str
    product_id: str
    acquisition_type: str
    acquisition_timestamp: datetime
    added_to_library_at: datetime
    last_played_timestamp: datetime | None
    total_playtime_seconds: int
    installation_status: str
    installed_version_id: str | None
    is_hidden: bool
    product: ProductInfo | None
    category_ids: list[str]
    lender_user_id: str | None = None  # family sharing: who lends a borrowed (family_shared) item


@dataclass(slots=True)
class CategoryView:
    id: str
    name: str
    created_at: datetime


@dataclass(slots=True)
class WishlistItemView:
    id: str
    product_id: str
    added_timestamp: datetime
    priority: int
    notes: str
    product: ProductInfo | None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str
    total_size: int


@dataclass(frozen=True)
class GrantResult:
    library_items: list[LibraryItemView]
    newly_granted_product_ids: list[uuid.UUID]


@dataclass(frozen=True)
class RevokeResult:
    revoked: bool


@dataclass(frozen=True)
class UpsertResult:
    upserted_count: int
    skipped_count: int
