"""Family sharing for tests: links made and changed over gRPC as the two users' clients do, products cached
and listed as the catalog and the launcher see them."""

from __future__ import annotations

import uuid

from library.v1 import family_sharing_pb2 as fpb
from library.v1 import library_service_pb2 as pb
from tests.support.auth import service_metadata, user_metadata

Link = fpb.FamilyLink


async def invite(library, owner: uuid.UUID, shared: uuid.UUID) -> Link:
    request = fpb.CreateFamilyLinkRequest(shared_user_id=str(shared))
    return (await library.CreateFamilyLink(request, metadata=user_metadata(owner))).link


async def act(library, user: uuid.UUID, action: str, link: Link) -> Link:
    """AcceptFamilyLink / DeclineFamilyLink / CancelFamilyLink / RevokeFamilyLink as `user`."""
    request = getattr(fpb, f"{action}FamilyLinkRequest")(link_id=link.link_id)
    return (await getattr(library, f"{action}FamilyLink")(request, metadata=user_metadata(user))).link


async def linked(library, owner: uuid.UUID, shared: uuid.UUID) -> Link:
    return await act(library, shared, "Accept", await invite(library, owner, shared))


async def items(library, user: uuid.UUID) -> dict[str, pb.LibraryItem]:
    page = await library.ListLibraryItems(
        pb.ListLibraryItemsRequest(include_hidden=True, page_size=200), metadata=user_metadata(user)
    )
    return {item.product_id: item for item in page.items}


async def products(library, *specs: tuple[str, str | None]) -> list[uuid.UUID]:
    """Caches products given as (type, base product id or None): `game` or `dlc`."""
    ids = [uuid.uuid4() for _ in specs]
    await library.UpsertProducts(
        pb.UpsertProductsRequest(
            products=[
                pb.Product(
                    product_id=str(product_id),
                    name=f"{kind} {product_id.hex[:6]}",
                    product_type=pb.Product.DLC if kind == "dlc" else pb.Product.GAME,
                    base_product_id=str(base or ""),
                )
                for product_id, (kind, base) in zip(ids, specs, strict=True)
            ]
        ),
        metadata=service_metadata(),
    )
    return ids
