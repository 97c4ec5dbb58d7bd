"""Malformed and hostile input at the server (SPEC §4): bytes that do not parse as the request type, and
text Postgres cannot store, are INVALID_ARGUMENT VALIDATION_FAILED on every method of every service, never
UNKNOWN or INTERNAL, and never with the parser's text. Methods come from the descriptors, so methods added
to proto/ are covered too."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, Phase, find, settings

from server.core.contract_rules import NO_NUL
from tests.support.auth import service_metadata
from tests.support.contract import messages, methods, nul_variants, oracle_violations
from tests.support.grpc_errors import error_details, violated_rules

METHODS = methods()


def _path(method) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _garbage_for(method) -> dict[str, bytes]:
    """Bytes that are not a message of the method's request type."""
    garbage = {
        "overlong varint": b"\x08" + b"\xff" * 11,
        "truncated length": b"\x0a\x10abc",
        "end group without start": b"\x0c",
    }
    strings = [f for f in method.input_type.fields if f.type == FieldDescriptor.TYPE_STRING]
    if strings:  # invalid UTF-8 in a real string field of the type
        tag = bytes([(strings[0].number << 3) | 2]) if strings[0].number < 16 else None
        if tag is not None:
            garbage["invalid utf-8"] = tag + b"\x03\xff\xfe\xfd"
    return garbage


async def _raw_call(channel, method, payload: bytes) -> grpc.aio.AioRpcError:
    call = channel.unary_unary(_path(method))  # identity serializers: the bytes go out as they are
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(payload, metadata=service_metadata())
    return raised.value


@pytest.mark.parametrize("method", METHODS, ids=_path)
async def test_bytes_that_do_not_parse_are_validation_failed_on_every_method(channel, method):
    for what, payload in _garbage_for(method).items():
        error = await _raw_call(channel, method, payload)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, error.details())
        assert error_details(error)[0] == "VALIDATION_FAILED", what
        assert error.details() == "the request is not a valid message of its type", what


def _valid_instance(request_type):
    """A request of the type that protovalidate accepts (the contract's rules hold)."""
    return find(
        messages(request_type, valid=True),
        lambda m: not oracle_violations(m),
        # the first valid instance will do: no shrinking it (that re-checks hundreds of variants)
        settings=settings(
            database=None,
            derandomize=True,
            max_examples=500,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        ),
    )


@pytest.mark.parametrize("method", METHODS, ids=_path)
async def test_a_nul_in_any_string_field_of_a_valid_request_is_validation_failed(channel, method):
    request_type = method.input_type
    call = channel.unary_unary(_path(method), request_serializer=lambda m: m.SerializeToString())
    for path, request in nul_variants(_valid_instance(request_type)):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(request, metadata=service_metadata())
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, path
        assert error_details(raised.value)[0] == "VALIDATION_FAILED", path
        assert (path, NO_NUL) in violated_rules(raised.value), path
