"""The server enforces the contract's field rules before any servicer runs: a request that breaks them is
INVALID_ARGUMENT VALIDATION_FAILED naming each field path and protovalidate rule id, and changes nothing."""

from __future__ import annotations

import uuid

import grpc
import pytest
from sqlalchemy import func, select

from library.v1 import library_service_pb2 as pb
from library.v1 import library_service_pb2_grpc
from server.library.tables import WishlistItem
from tests.support.auth import service_metadata, user_metadata
from tests.support.grpc_errors import error_details, violated_rules


@pytest.fixture
def stub(channel) -> library_service_pb2_grpc.LibraryServiceStub:
    return library_service_pb2_grpc.LibraryServiceStub(channel)


async def test_a_request_breaking_the_contract_names_each_field_and_rule_and_writes_nothing(stub, sessions):
    user = uuid.uuid4()
    request = pb.AddWishlistItemRequest(product_id="nope", priority=-1, notes="n" * 1001, request_id="x")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.AddWishlistItem(request, metadata=user_metadata(user))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(raised.value)[0] == "VALIDATION_FAILED"
    assert violated_rules(raised.value) == [
        ("product_id", "string.uuid"),
        ("priority", "int32.gte"),
        ("notes", "string.max_len"),
        ("request_id", "string.uuid"),
    ]
    async with sessions() as session:
        assert await session.scalar(select(func.count()).where(WishlistItem.user_id == user)) == 0


async def test_nested_and_repeated_violations_carry_their_paths(stub):
    request = pb.GrantEntitlementsRequest(
        user_id=str(uuid.uuid4()),
        items=[
            pb.EntitlementGrant(product_id=str(uuid.uuid4()), acquisition_type=1),
            pb.EntitlementGrant(product_id="", acquisition_type=42),
        ],
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GrantEntitlements(request, metadata=service_metadata())
    assert violated_rules(raised.value) == [
        ("items[1].product_id", "required"),
        ("items[1].acquisition_type", "enum.defined_only"),
    ]


async def test_authentication_comes_before_the_contract_rules(stub):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.AddWishlistItem(pb.AddWishlistItemRequest(product_id="nope"))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
