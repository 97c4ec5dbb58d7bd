"""The call pipeline every RPC goes through (server/core/call_pipeline.py), on a real grpc.aio server:
authentication, domain errors as rich status, a dependency down as UNAVAILABLE, and nothing internal
leaking to the client."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from scripts.devtokens import mint
from server.core import auth
from server.core.auth import TokenVerifier
from server.core.call_pipeline import CallPipeline
from server.core.db import create_engine
from server.core.errors import FieldViolation, InvalidArgument, NotFound
from server.core.redis import create_redis
from tests.support.grpc_errors import error_details, field_violations, rich_status
from tests.support.processes import free_port
from tests.support.waiting import wait_until

SERVICE = "test.Pipeline"


async def _whoami(request: bytes, context) -> bytes:
    return auth.current_user_id().bytes


async def _not_found(request: bytes, context) -> bytes:
    raise NotFound("no such session", reason="SESSION_NOT_FOUND")


async def _invalid(request: bytes, context) -> bytes:
    raise InvalidArgument([FieldViolation("product_id", "must be a UUID")])


async def _crash(request: bytes, context) -> bytes:
    raise RuntimeError('psycopg.errors.UndefinedTable: relation "secret_table" does not exist')


async def _database_down(request: bytes, context) -> bytes:
    engine = create_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing", pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    return b""


async def _redis_down(request: bytes, context) -> bytes:
    client = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        await client.ping()
    finally:
        await client.aclose()
    return b""


STARTED = asyncio.Event()


async def _slow(request: bytes, context) -> bytes:
    STARTED.set()
    await asyncio.sleep(60)
    return b""


async def _unbuilt(request: bytes, context) -> bytes:
    raise NotImplementedError


async def _service_only(request: bytes, context) -> bytes:
    auth.require_service()
    return b"ok"


HANDLERS = {
    "WhoAmI": _whoami,
    "NotFound": _not_found,
    "Invalid": _invalid,
    "Crash": _crash,
    "DatabaseDown": _database_down,
    "RedisDown": _redis_down,
    "Unbuilt": _unbuilt,
    "Slow": _slow,
    "ServiceOnly": _service_only,
}


@pytest.fixture
async def pipeline(settings):
    pipeline = CallPipeline(TokenVerifier.from_settings(settings))
    server = grpc.aio.server()
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(pipeline.wrap(f"/{SERVICE}/{name}", fn))
        for name, fn in HANDLERS.items()
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:

        def call(method: str, token: str | None = None):
            metadata = (("authorization", f"Bearer {token}"),) if token else ()
            return channel.unary_unary(f"/{SERVICE}/{method}")(b"", metadata=metadata)

        yield call
    await server.stop(0)


async def test_the_jwt_subject_is_the_caller(pipeline):
    user = uuid.uuid4()
    assert await pipeline("WhoAmI", mint(str(user))) == user.bytes


async def test_missing_expired_or_forged_token_is_unauthenticated(pipeline):
    forged = mint(str(uuid.uuid4()))[:-4] + "AAAA"
    for token in (None, mint(str(uuid.uuid4()), expired=True), forged):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await pipeline("WhoAmI", token)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_details(raised.value)[0] == "UNAUTHENTICATED"


async def test_domain_error_becomes_its_code_and_reason(pipeline):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await pipeline("NotFound", mint(str(uuid.uuid4())))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(raised.value)[0] == "SESSION_NOT_FOUND"


async def test_invalid_argument_carries_field_violations(pipeline):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await pipeline("Invalid", mint(str(uuid.uuid4())))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(raised.value) == ("VALIDATION_FAILED", ["product_id"])
    assert field_violations(raised.value) == [("product_id", "must be a UUID")]
    assert [d.type_url for d in rich_status(raised.value).details] == [
        "type.googleapis.com/google.rpc.ErrorInfo",
        "type.googleapis.com/google.rpc.BadRequest",
    ]


async def test_unexpected_error_is_internal_and_reveals_nothing(pipeline):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await pipeline("Crash", mint(str(uuid.uuid4())))
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details() == "internal error"
    assert error_details(raised.value) == ("INTERNAL", [])  # exactly one ErrorInfo, like every error
    assert b"secret_table" not in b"".join(
        v if isinstance(v, bytes) else v.encode() for _, v in raised.value.trailing_metadata()
    )


@pytest.mark.parametrize("method", ["DatabaseDown", "RedisDown"])
async def test_a_dependency_down_is_unavailable_and_reveals_nothing(pipeline, method):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await pipeline(method, mint(str(uuid.uuid4())))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_details(raised.value)[0] == "UNAVAILABLE"
    assert raised.value.details() == "a service this call depends on is unavailable; retry later"


async def test_unbuilt_method_is_unimplemented(pipeline):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await pipeline("Unbuilt", mint(str(uuid.uuid4())))
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error_details(raised.value)[0] == "NOT_IMPLEMENTED"


async def test_internal_methods_need_the_service_role(pipeline):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await pipeline("ServiceOnly", mint(str(uuid.uuid4())))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(raised.value)[0] == "PERMISSION_DENIED"
    assert await pipeline("ServiceOnly", mint("service:payment", roles=("service",))) == b"ok"


def _handled(method: str, code: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "grpc_server_handled_total", {"method": f"/{SERVICE}/{method}", "code": code}
        )
        or 0
    )


async def test_a_cancelled_call_is_counted_as_cancelled_not_ok(pipeline):
    STARTED.clear()
    before = _handled("Slow", "CANCELLED"), _handled("Slow", "OK")
    call = pipeline("Slow", mint(str(uuid.uuid4())))
    await STARTED.wait()  # the server is inside the method
    call.cancel()
    await wait_until(lambda: _handled("Slow", "CANCELLED") == before[0] + 1, what="the CANCELLED count")
    assert _handled("Slow", "OK") == before[1]
