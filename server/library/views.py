"""What the library's use cases return: plain values (no ORM rows), so the servicer can map them to protos
and the replay store can keep them as JSON.

The values made per listed row are slotted dataclasses, not frozen ones (nobody changes them; a frozen
dataclass pays an `object.__setattr__` per field, several microseconds per row of a page of 50):
docs/ARCHITECTURE.md, "Database access"."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class ProductInfo:
    """Cached catalog metadata. `product_type` is the catalog value (`game`, `dlc`, ...) or ''."""

    product_id: uuid.UUID
    name: str = ""
    product_type: str = ""
    cover_image_url: str = ""
    icon_url: str = ""
    developer: str = ""
    publisher: str = ""
    release_date: datetime | None = None
    genres: list[str] = field(default_factory=list)
    updated_at: datetime | None = None
    base_product_id: uuid.UUID | None = None  # a DLC's base game


@dataclass(slots=True)
class LibraryItemView:
    id: uuid.UUID
    product_id: uuid.UUID
    product: ProductInfo | None
    acquisition_type: str
    acquisition_timestamp: datetime
    added_to_library_at: datetime
    last_played_timestamp: datetime | None
    total_playtime_seconds: int
    installation_status: str
    installed_version_id: uuid.UUID | None
    is_hidden: bool
    category_ids: list[uuid.UUID]
    lender_user_id: uuid.UUID | None = None  # family sharing: who lends a borrowed (family_shared) item


@dataclass(slots=True)
class CategoryView:
    id: uuid.UUID
    name: str
    created_at: datetime


@dataclass(slots=True)
class WishlistItemView:
    id: uuid.UUID
    product_id: uuid.UUID
    product: ProductInfo | None
    added_timestamp: datetime
    priority: int
    notes: str


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
