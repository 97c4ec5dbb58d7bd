"""The caller's library: owned games with product metadata, playtime and installation (LibraryService)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from client.sdk.connection import Connection
from library.v1 import library_service_pb2 as pb
from library.v1 import library_service_pb2_grpc

SORTS = ("NAME_ASC", "LAST_PLAYED_DESC", "ADDED_AT_DESC")
STATUSES = ("NOT_INSTALLED", "INSTALLING", "INSTALLED", "UPDATE_REQUIRED", "ERROR")


@dataclass(frozen=True)
class LibraryEntry:
    library_item_id: str
    product_id: str
    name: str  # "" until the catalog told the service about the product
    product_type: str
    acquisition: str
    added_at: datetime | None
    last_played_at: datetime | None
    total_playtime_seconds: int
    installation_status: str
    installed_version_id: str
    hidden: bool

    @classmethod
    def from_pb(cls, m: pb.LibraryItem) -> LibraryEntry:
        return cls(
            library_item_id=m.id,
            product_id=m.product_id,
            name=m.product.name,
            product_type=pb.Product.ProductType.Name(m.product.product_type),
            acquisition=pb.LibraryItem.AcquisitionType.Name(m.acquisition_type),
            added_at=_time(m, "added_to_library_at"),
            last_played_at=_time(m, "last_played_timestamp"),
            total_playtime_seconds=m.total_playtime_seconds,
            installation_status=pb.LibraryItem.InstallationStatus.Name(m.installation_status),
            installed_version_id=m.installed_version_id,
            hidden=m.is_hidden,
        )


def _time(message, name: str) -> datetime | None:
    return getattr(message, name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None


class LibraryClient:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._stub = library_service_pb2_grpc.LibraryServiceStub(connection.channel)

    async def items(
        self,
        *,
        search: str = "",
        sort_by: str = "NAME_ASC",
        status: str = "",
        include_hidden: bool = False,
        page_size: int = 200,
    ) -> AsyncIterator[LibraryEntry]:
        """Every matching item, page after page."""
        request = pb.ListLibraryItemsRequest(
            search=search,
            sort_by=pb.ListLibraryItemsRequest.SortBy.Value(sort_by),
            status=pb.LibraryItem.InstallationStatus.Value(status) if status else 0,
            include_hidden=include_hidden,
            page_size=page_size,
        )
        while True:
            reply = await self._connection.call(self._stub.ListLibraryItems, request)
            for item in reply.items:
                yield LibraryEntry.from_pb(item)
            if not reply.next_page_token:
                return
            request.page_token = reply.next_page_token
