"""Pure rules of the shared core: validation, page tokens, error wire form, token verification."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import jwt
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2_grpc

from server.core.auth import Principal, TokenVerifier, bearer_token
from server.core.config import ConfigurationError
from server.core.errors import (
    ERROR_DOMAIN,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from server.core.method_table import MethodTable
from server.core.pagination import decode_page_token, encode_page_token, query_fingerprint
from server.core.validation import MAX_PAGE_SIZE, Validator

SECRET = "unit-test-secret-unit-test-secret"


def test_page_size_defaults_caps_and_rejects_negative():
    v = Validator()
    assert v.page_size(0) == 50
    assert v.page_size(10_000) == MAX_PAGE_SIZE
    assert v.page_size(-1) == 50
    assert [x.field for x in v.violations] == ["page_size"]


def test_validator_collects_every_violation_before_raising():
    v = Validator()
    v.uuid("product_id", "not-a-uuid")
    v.uuid("session_id", "")
    v.text("notes", "x" * 2001, max_len=2000)
    v.non_negative("progress", -5)
    v.enum("sort_by", 99, {1, 2, 3})
    with pytest.raises(InvalidArgument) as raised:
        v.check()
    assert [x.field for x in raised.value.violations] == [
        "product_id",
        "session_id",
        "notes",
        "progress",
        "sort_by",
    ]


def test_repeated_uuids_accept_comma_separated_elements():
    a, b = uuid.uuid4(), uuid.uuid4()
    v = Validator()
    assert v.uuids("product_ids", [f"{a},{b}"]) == [a, b]
    assert not v.violations


def test_future_timestamp_is_rejected_beyond_clock_skew():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(now + timedelta(hours=1))
    v = Validator()
    v.timestamp("end_time", ts, now=now)
    assert [x.description for x in v.violations] == ["must not be in the future"]


@pytest.mark.parametrize("seconds", [10**12, -62135596800 - 1])
def test_out_of_range_timestamp_is_a_violation_not_an_exception(seconds):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    v = Validator()
    assert v.timestamp("start_time", timestamp_pb2.Timestamp(seconds=seconds), now=now) is None
    assert v.timestamp("end_time", timestamp_pb2.Timestamp(seconds=seconds), allow_future=True) is None
    assert [(x.field, x.description) for x in v.violations] == [
        ("start_time", "is out of range"),
        ("end_time", "is out of range"),
    ]


def test_allow_future_accepts_a_time_ahead_of_the_clock():
    when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=365)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    v = Validator()
    assert v.timestamp("release_date", ts, allow_future=True) == when
    assert not v.violations


def test_page_token_round_trips_and_refuses_other_queries():
    fp = query_fingerprint("user", "NAME_ASC")
    token = encode_page_token(["abc", 42], fp)
    assert decode_page_token(token, fp) == ["abc", 42]
    assert decode_page_token("", fp) is None
    with pytest.raises(InvalidArgument):
        decode_page_token(token, query_fingerprint("user", "ADDED_AT_DESC"))
    with pytest.raises(InvalidArgument):
        decode_page_token("%%%garbage", fp)


def test_invalid_argument_carries_error_info_and_field_violations():
    status = InvalidArgument([FieldViolation("product_id", "must be a UUID")]).to_status()
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad_request)
    assert (info.reason, info.domain) == ("VALIDATION_FAILED", ERROR_DOMAIN)
    assert bad_request.field_violations[0].field == "product_id"


def test_not_found_takes_the_spec_reason():
    status = NotFound("no such session", reason="SESSION_NOT_FOUND").to_status()
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert info.reason == "SESSION_NOT_FOUND"


_ISSUED = {"issuer": "https://issuer.test", "audience": "library"}


def _hs_token(**claims) -> str:
    body = {
        "sub": str(uuid.uuid4()),
        "exp": int(time.time()) + 60,
        "roles": ["user"],
        "iss": _ISSUED["issuer"],
        "aud": _ISSUED["audience"],
        **claims,
    }
    return jwt.encode(body, SECRET, algorithm="HS256")


def test_verifier_accepts_hs256_only_with_a_configured_secret():
    token = _hs_token()
    principal = TokenVerifier(hs256_secret=SECRET, **_ISSUED).verify(token)
    assert principal.roles == frozenset({"user"})
    with pytest.raises(Unauthenticated):
        TokenVerifier(hs256_secret="another-secret-another-secret-xx", **_ISSUED).verify(token)


def test_verifier_refuses_expired_tokens_and_wrong_audience():
    verifier = TokenVerifier(hs256_secret=SECRET, **_ISSUED)
    with pytest.raises(Unauthenticated):
        verifier.verify(_hs_token(exp=int(time.time()) - 10, aud="library"))
    with pytest.raises(Unauthenticated):
        verifier.verify(_hs_token(aud="someone-else"))
    assert verifier.verify(_hs_token(aud="library")).roles == frozenset({"user"})


def test_service_principal_is_not_a_user():
    with pytest.raises(PermissionDenied):
        _ = Principal.of("service:payment", frozenset({"service"})).user_id


def test_bearer_token_is_read_from_the_authorization_value():
    assert bearer_token("Bearer abc.def") == "abc.def"
    assert bearer_token("bearer abc.def") == "abc.def"
    assert bearer_token("Basic abc") is None
    assert bearer_token("") is None


def test_method_table_answers_each_registered_method_and_nothing_else():
    table = MethodTable()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), table)

    def details(method: str):
        return type("Details", (), {"method": method, "invocation_metadata": ()})()

    check = table.service(details("/grpc.health.v1.Health/Check"))
    assert check is not None and not check.request_streaming and not check.response_streaming
    assert table.service(details("/grpc.health.v1.Health/Watch")).response_streaming
    assert table.service(details("/grpc.health.v1.Health/Nope")) is None
    assert table.service(details("/other.Service/Check")) is None


def test_verifier_needs_an_issuer_and_an_audience():
    for missing in ("issuer", "audience"):
        with pytest.raises(ConfigurationError, match="JWT_ISSUER and JWT_AUDIENCE"):
            TokenVerifier(hs256_secret=SECRET, **{**_ISSUED, missing: ""})


def test_verifier_allows_the_configured_clock_leeway_only():
    verifier = TokenVerifier(hs256_secret=SECRET, leeway_seconds=30, **_ISSUED)
    assert verifier.verify(_hs_token(exp=int(time.time()) - 10)).roles == frozenset({"user"})
    with pytest.raises(Unauthenticated):
        verifier.verify(_hs_token(exp=int(time.time()) - 40))


def test_traceparent_round_trips_and_anything_else_is_no_parent():
    from server.core.tracing import parse_traceparent

    value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    context = parse_traceparent(value)
    assert context is not None and context.sampled
    assert context.header() == value
    assert parse_traceparent(value[:-2] + "00").sampled is False
    for bad in (
        "",
        "garbage",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # unknown version
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
        "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # not hex
        "00-0x4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",  # what int(…, 16) would take
        "00-4bf92f3577b34da6_3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # W3C: lowercase only
    ):
        assert parse_traceparent(bad) is None, bad
