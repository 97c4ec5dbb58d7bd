"""LibraryService's internal RPCs as the catalog and payment services call them (service role): caching
products and granting entitlements over gRPC. For a library item inserted straight into the database, see
tests.support.ownership.grant."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from library.v1 import library_service_pb2 as pb
from library.v1 import library_service_pb2_grpc
from tests.support.auth import service_metadata


async def upsert_products(
    stub: library_service_pb2_grpc.LibraryServiceStub, names: Mapping[uuid.UUID, str]
) -> None:
    """UpsertProducts: caches each product (a game) under its name."""
    products = [pb.Product(product_id=str(p), name=n, product_type=pb.Product.GAME) for p, n in names.items()]
    await stub.UpsertProducts(pb.UpsertProductsRequest(products=products), metadata=service_metadata())


async def grant_entitlements(
    stub: library_service_pb2_grpc.LibraryServiceStub,
    user: uuid.UUID,
    *products: uuid.UUID,
    acquisition_type: pb.LibraryItem.AcquisitionType.ValueType = pb.LibraryItem.PURCHASE,
    order_id: str = "",
    request_id: str = "",
    timeout: float | None = None,
) -> pb.GrantEntitlementsResponse:
    """GrantEntitlements: the products to the user, all acquired the same way."""
    return await stub.GrantEntitlements(
        pb.GrantEntitlementsRequest(
            user_id=str(user),
            items=[
                pb.EntitlementGrant(product_id=str(p), acquisition_type=acquisition_type) for p in products
            ],
            order_id=order_id,
            request_id=request_id,
        ),
        metadata=service_metadata(),
        timeout=timeout,
    )
