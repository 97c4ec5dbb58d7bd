"""Reading the rich status (ErrorInfo, BadRequest) a failed call carries (SPEC §4)."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status a failed call carries in `grpc-status-details-bin` (it must carry one)."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, f"no rich status on {error.code()}: {error.details()}"
    return status_pb2.Status.FromString(raw)


def _bad_request_violations(error: grpc.aio.AioRpcError) -> list[error_details_pb2.BadRequest.FieldViolation]:
    violations = []
    for detail in rich_status(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(bad.field_violations)
    return violations


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field, description) of every BadRequest violation of a failed call, in order (none: `[]`)."""
    return [(v.field, v.description) for v in _bad_request_violations(error)]


def violated_rules(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field, rule id) of every BadRequest violation of a failed call, in order; the rule id travels as
    the violation's `reason` (e.g. `string.uuid`)."""
    return [(v.field, v.reason) for v in _bad_request_violations(error)]


def error_details(error: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    """(ErrorInfo reason, BadRequest violated field names) of a failed call; it carries exactly one
    ErrorInfo, whose domain is ours."""
    infos = []
    for detail in rich_status(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
    assert len(infos) == 1, f"expected one ErrorInfo on {error.code()}, got {len(infos)}"
    assert infos[0].domain == "library.platform"
    return infos[0].reason, [field for field, _ in field_violations(error)]


async def failure(call: Awaitable) -> tuple[grpc.StatusCode, str, list[str]]:
    """Awaits a call that must fail: (status code, ErrorInfo reason, BadRequest violated field names)."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return (raised.value.code(), *error_details(raised.value))
