"""LibraryService transport: map proto ⇄ domain, call a use case. Nothing else.

The contract's field rules (buf.validate annotations) are enforced by the call pipeline before a method
runs; what is checked here spans fields or entries (update masks, duplicate ids, timestamps)."""

from __future__ import annotations

import functools
import uuid
from datetime import datetime

from google.protobuf import empty_pb2

from library.v1 import library_service_pb2 as pb
from library.v1 import library_service_pb2_grpc
from server.core.auth import current_user_id, require_service
from server.core.deps import Deps
from server.core.protoconv import add_all, timestamp
from server.core.validation import Validator, page_size, parse_uuid
from server.library import rules, use_cases
from server.library.family_servicer import FamilySharingRpcs
from server.library.views import CategoryView, LibraryItemView, ProductInfo, WishlistItemView

_Acquisition = pb.LibraryItem.AcquisitionType
_Installation = pb.LibraryItem.InstallationStatus
_ProductType = pb.Product.ProductType
_SortBy = pb.ListLibraryItemsRequest.SortBy
_Reason = pb.RevokeEntitlementRequest.Reason


def _domain(enum, value: int) -> str:
    """Proto enum number → stored value (`INSTALLED` → `installed`)."""
    return enum.Name(value).lower()


def _wire(enum, value: str) -> int:
    """Stored value → proto enum number; unknown values map to UNSPECIFIED."""
    return _numbers(enum).get(value.upper(), 0)


@functools.cache
def _numbers(enum) -> dict[str, int]:
    return dict(enum.items())


# Looked up per listed item: by the stored value itself (no `.upper()` per item, as _wire does).
_ACQUISITION = {name.lower(): number for name, number in _numbers(_Acquisition).items()}
_INSTALLATION = {name.lower(): number for name, number in _numbers(_Installation).items()}


_PRODUCTS_CACHED = 4096
_products: dict[str, tuple[ProductInfo, pb.Product]] = {}


def _product(info: ProductInfo | None, product_id: str) -> pb.Product:
    """The message of a product, cached by id with the columns it was made from: the same few products
    appear in many users' libraries, and a message costs more to build than its columns cost to compare.
    Callers copy it into their message (`_with_product`), never change it."""
    if info is None:
        return pb.Product(product_id=product_id)
    cached = _products.get(info.product_id)
    if cached is not None and cached[0] == info:
        return cached[1]
    message = pb.Product(
        product_id=info.product_id,
        name=info.name,
        product_type=_wire(_ProductType, info.product_type),
        cover_image_url=info.cover_image_url,
        icon_url=info.icon_url,
        developer=info.developer,
        publisher=info.publisher,
        release_date=timestamp(info.release_date),
        genres=info.genres,
        updated_at=timestamp(info.updated_at),
        base_product_id=info.base_product_id or "",
    )
    if len(_products) >= _PRODUCTS_CACHED and info.product_id not in _products:
        del _products[next(iter(_products))]  # the oldest entry
    _products[info.product_id] = (info, message)
    return message


def _with_product(message, view: LibraryItemView | WishlistItemView):
    """`message` with the view's product message copied in. Not a constructor argument: upb copies a
    message given to a constructor by serializing and parsing it, over twice CopyFrom's cost (about 14,000
    vs 6,000 instructions per item of a page: issue 14)."""
    message.product.CopyFrom(_product(view.product, view.product_id))
    return message


def _add_with_product(repeated, views: list, fields) -> None:
    """add_all (server.core.protoconv) for items with a product: `fields(view)` is the rest."""
    add = repeated.add
    for view in views:
        add(**fields(view)).product.CopyFrom(_product(view.product, view.product_id))


def _item_fields(view: LibraryItemView) -> dict:
    return {
        "id": view.id,
        "product_id": view.product_id,
        "acquisition_type": _ACQUISITION.get(view.acquisition_type, 0),
        "acquisition_timestamp": timestamp(view.acquisition_timestamp),
        "added_to_library_at": timestamp(view.added_to_library_at),
        "last_played_timestamp": timestamp(view.last_played_timestamp),
        "total_playtime_seconds": view.total_playtime_seconds,
        "installation_status": _INSTALLATION.get(view.installation_status, 0),
        "installed_version_id": view.installed_version_id or "",
        "is_hidden": view.is_hidden,
        "category_ids": view.category_ids,
        "lender_user_id": view.lender_user_id or "",
    }


def _item(view: LibraryItemView) -> pb.LibraryItem:
    return _with_product(pb.LibraryItem(**_item_fields(view)), view)


def _category_fields(view: CategoryView) -> dict:
    return {"id": view.id, "name": view.name, "created_at": timestamp(view.created_at)}


def _category(view: CategoryView) -> pb.Category:
    return pb.Category(**_category_fields(view))


def _wish_fields(view: WishlistItemView) -> dict:
    return {
        "id": view.id,
        "product_id": view.product_id,
        "added_timestamp": timestamp(view.added_timestamp),
        "priority": view.priority,
        "notes": view.notes,
    }


def _wish(view: WishlistItemView) -> pb.WishlistItem:
    return _with_product(pb.WishlistItem(**_wish_fields(view)), view)


def _distinct(v: Validator, field: str, ids: list[uuid.UUID]) -> None:
    seen: set[uuid.UUID] = set()
    for i, value in enumerate(ids):
        if value in seen:
            v.fail(f"{field}[{i}].product_id", "duplicate product id")
        seen.add(value)


def _order_id(value: str) -> str | None:
    """The idempotency key of an optional order id (the contract checked it is a UUID)."""
    return rules.order_key(value) if value else None


def _product_row(v: Validator, field: str, product: pb.Product, now: datetime) -> dict:
    """A product cache row from an UpsertProducts entry (every column: the entry replaces the cache)."""
    return {
        "product_id": parse_uuid(product.product_id),
        "name": product.name,
        "product_type": _domain(_ProductType, product.product_type) if product.product_type else "",
        "cover_image_url": product.cover_image_url,
        "icon_url": product.icon_url,
        "developer": product.developer,
        "publisher": product.publisher,
        "release_date": v.timestamp(
            f"{field}.release_date", product.release_date, required=False, allow_future=True
        ),
        "genres": list(product.genres),
        "base_product_id": parse_uuid(product.base_product_id),
        "updated_at": v.timestamp(f"{field}.updated_at", product.updated_at, now=now, required=False) or now,
    }


class LibraryServiceServicer(FamilySharingRpcs, library_service_pb2_grpc.LibraryServiceServicer):
    def __init__(self, deps: Deps):
        self._deps = deps

    async def ListLibraryItems(
        self, request: pb.ListLibraryItemsRequest, context
    ) -> pb.ListLibraryItemsResponse:
        user_id = current_user_id()
        query = use_cases.LibraryQuery(
            installation_status=_domain(_Installation, request.status) if request.status else None,
            category_id=parse_uuid(request.category_id),
            search=request.search,
            sort=_domain(_SortBy, request.sort_by or _SortBy.Value("NAME_ASC")),
            include_hidden=request.include_hidden,
            page_size=page_size(request.page_size),
            page_token=request.page_token,
        )
        page = await use_cases.list_library_items(self._deps, user_id, query)
        response = pb.ListLibraryItemsResponse(
            next_page_token=page.next_page_token, total_size=page.total_size
        )
        _add_with_product(response.items, page.items, _item_fields)
        return response

    async def UpdateLibraryItem(
        self, request: pb.UpdateLibraryItemRequest, context
    ) -> pb.UpdateLibraryItemResponse:
        user_id = current_user_id()
        v = Validator()
        fields, unknown = rules.fields_to_update(
            request.update_mask.paths,
            has_is_hidden=request.HasField("is_hidden"),
            has_category_ids=bool(request.category_ids),
            has_installation_status=request.installation_status != 0,
        )
        for path in unknown:
            v.fail("update_mask", f"unknown field path {path!r}")
        if rules.INSTALLATION_STATUS in fields and request.installation_status == 0:
            v.fail("installation_status", "is required when named in update_mask")
        v.check()
        changes = use_cases.ItemChanges(
            fields=fields,
            is_hidden=request.is_hidden,
            category_ids=[parse_uuid(c) for c in request.category_ids],
            installation_status=(
                _domain(_Installation, request.installation_status) if request.installation_status else None
            ),
        )
        item_id = parse_uuid(request.library_item_id)
        view = await use_cases.update_library_item(self._deps, user_id, item_id, changes)
        return pb.UpdateLibraryItemResponse(library_item=_item(view))

    async def ListCategories(self, request: pb.ListCategoriesRequest, context) -> pb.ListCategoriesResponse:
        user_id = current_user_id()
        page = await use_cases.list_categories(
            self._deps, user_id, page_size(request.page_size), request.page_token
        )
        response = pb.ListCategoriesResponse(next_page_token=page.next_page_token, total_size=page.total_size)
        add_all(response.categories, page.items, _category_fields)
        return response

    async def CreateCategory(self, request: pb.CreateCategoryRequest, context) -> pb.CreateCategoryResponse:
        user_id = current_user_id()
        v = Validator()
        name = rules.clean_category_name(request.name)
        if (problem := rules.category_name_problem(name)) is not None:
            v.fail("name", problem)
        v.check()
        category = await use_cases.create_category(self._deps, user_id, name, parse_uuid(request.request_id))
        return pb.CreateCategoryResponse(category=_category(category))

    async def ListWishlist(self, request: pb.ListWishlistRequest, context) -> pb.ListWishlistResponse:
        user_id = current_user_id()
        size = page_size(request.page_size)
        page = await use_cases.list_wishlist(self._deps, user_id, size, request.page_token)
        response = pb.ListWishlistResponse(next_page_token=page.next_page_token, total_size=page.total_size)
        _add_with_product(response.items, page.items, _wish_fields)
        return response

    async def AddWishlistItem(
        self, request: pb.AddWishlistItemRequest, context
    ) -> pb.AddWishlistItemResponse:
        user_id = current_user_id()
        item = await use_cases.add_wishlist_item(
            self._deps,
            user_id,
            parse_uuid(request.product_id),
            priority=request.priority,
            notes=request.notes,
            request_id=parse_uuid(request.request_id),
        )
        return pb.AddWishlistItemResponse(wishlist_item=_wish(item))

    async def RemoveWishlistItem(
        self, request: pb.RemoveWishlistItemRequest, context
    ) -> pb.RemoveWishlistItemResponse:
        user_id = current_user_id()
        removed = await use_cases.remove_wishlist_item(self._deps, user_id, parse_uuid(request.product_id))
        return pb.RemoveWishlistItemResponse(removed=removed)

    async def UpdateWishlistItem(
        self, request: pb.UpdateWishlistItemRequest, context
    ) -> pb.UpdateWishlistItemResponse:
        user_id = current_user_id()
        v = Validator()
        fields, unknown = rules.resolve_mask(
            request.update_mask.paths,
            {rules.PRIORITY: request.HasField("priority"), rules.NOTES: request.HasField("notes")},
        )
        for path in unknown:
            v.fail("update_mask", f"unknown field path {path!r}")
        if not fields and not unknown:
            v.fail("update_mask", "names no field to update (priority, notes)")
        v.check()
        changes = use_cases.WishChanges(fields=fields, priority=request.priority, notes=request.notes)
        item = await use_cases.update_wishlist_item(
            self._deps, user_id, parse_uuid(request.product_id), changes
        )
        return pb.UpdateWishlistItemResponse(wishlist_item=_wish(item))

    async def UpdateCategory(self, request: pb.UpdateCategoryRequest, context) -> pb.UpdateCategoryResponse:
        user_id = current_user_id()
        v = Validator()
        _, unknown = rules.resolve_mask(request.update_mask.paths, {rules.NAME: True})
        for path in unknown:
            v.fail("update_mask", f"unknown field path {path!r}")
        name = rules.clean_category_name(request.name)
        if (problem := rules.category_name_problem(name)) is not None:
            v.fail("name", problem)
        v.check()
        category = await use_cases.update_category(self._deps, user_id, parse_uuid(request.category_id), name)
        return pb.UpdateCategoryResponse(category=_category(category))

    async def DeleteCategory(self, request: pb.DeleteCategoryRequest, context) -> empty_pb2.Empty:
        user_id = current_user_id()
        await use_cases.delete_category(self._deps, user_id, parse_uuid(request.category_id))
        return empty_pb2.Empty()

    async def GrantEntitlements(
        self, request: pb.GrantEntitlementsRequest, context
    ) -> pb.GrantEntitlementsResponse:
        caller = require_service().subject
        v = Validator()
        product_ids = [parse_uuid(g.product_id) for g in request.items]
        _distinct(v, "items", product_ids)
        v.check()
        grants = [
            use_cases.Grant(product_id, _domain(_Acquisition, g.acquisition_type))
            for product_id, g in zip(product_ids, request.items, strict=True)
        ]
        result = await use_cases.grant_entitlements(
            self._deps,
            caller,
            parse_uuid(request.user_id),
            grants,
            order_id=_order_id(request.order_id),
            request_id=parse_uuid(request.request_id),
        )
        response = pb.GrantEntitlementsResponse(
            newly_granted_product_ids=[str(p) for p in result.newly_granted_product_ids]
        )
        _add_with_product(response.library_items, result.library_items, _item_fields)
        return response

    async def RevokeEntitlement(
        self, request: pb.RevokeEntitlementRequest, context
    ) -> pb.RevokeEntitlementResponse:
        caller = require_service().subject
        result = await use_cases.revoke_entitlement(
            self._deps,
            caller,
            parse_uuid(request.user_id),
            parse_uuid(request.product_id),
            reason=_domain(_Reason, request.reason),
            order_id=_order_id(request.order_id),
            request_id=parse_uuid(request.request_id),
        )
        return pb.RevokeEntitlementResponse(revoked=result.revoked)

    async def CheckEntitlement(
        self, request: pb.CheckEntitlementRequest, context
    ) -> pb.CheckEntitlementResponse:
        require_service()
        item = await use_cases.check_entitlement(
            self._deps, parse_uuid(request.user_id), parse_uuid(request.product_id)
        )
        if item is None:
            return pb.CheckEntitlementResponse(owned=False)
        return pb.CheckEntitlementResponse(
            owned=True, acquisition_type=_wire(_Acquisition, item.acquisition_type), library_item=_item(item)
        )

    async def UpsertProducts(self, request: pb.UpsertProductsRequest, context) -> pb.UpsertProductsResponse:
        require_service()
        v = Validator()
        now = self._deps.clock()
        rows = [_product_row(v, f"products[{i}]", p, now) for i, p in enumerate(request.products)]
        _distinct(v, "products", [row["product_id"] for row in rows])
        v.check()
        result = await use_cases.upsert_products(self._deps, rows)
        return pb.UpsertProductsResponse(
            upserted_count=result.upserted_count, skipped_count=result.skipped_count
        )
