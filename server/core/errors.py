"""Domain errors and their wire form: one canonical gRPC code + one google.rpc.ErrorInfo reason (SPEC §4).

Any layer below the servicer raises these; the call pipeline renders them as rich status
(`grpc-status-details-bin`) so that Envoy's transcoder shows the same details in the JSON body. A failure of
a dependency (database or Redis down, unreachable or timing out) is UNAVAILABLE, which clients retry;
anything else unexpected is INTERNAL with a generic message.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import psycopg
import redis.exceptions
import sqlalchemy.exc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "library.platform"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One field problem. `field` is the field's path in proto names (`items[2].product_id`); `rule` the
    id of the rule it breaks (a protovalidate rule id such as `string.uuid` for the contract's rules),
    sent as the BadRequest violation's `reason`."""

    field: str
    description: str
    rule: str = ""


class DomainError(Exception):
    """Base of every error a client may see. `reason` is the SPEC §4 ErrorInfo reason."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"
    # Extra trailing metadata sent with the status (e.g. retry-after, which Envoy passes to REST clients).
    trailing_metadata: tuple[tuple[str, str], ...] = ()

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = metadata or {}

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata)
        packed = any_pb2.Any()
        packed.Pack(info)
        return [packed]

    def to_status(self) -> status_pb2.Status:
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=self.details())


# At most this many field violations travel with an error: the status rides in a trailer, which clients
# cap (16 KiB by default), and a request with hundreds of bad entries must still get a readable answer.
MAX_REPORTED_VIOLATIONS = 20


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "VALIDATION_FAILED"

    def __init__(self, violations: list[FieldViolation], message: str | None = None):
        self.violations = violations
        reported = violations[:MAX_REPORTED_VIOLATIONS]
        summary = "; ".join(f"{v.field}: {v.description}" for v in reported)
        if len(violations) > len(reported):
            summary += f"; and {len(violations) - len(reported)} more"
        super().__init__(message or f"invalid request: {summary}")

    def details(self) -> list[any_pb2.Any]:
        if not self.violations:
            return super().details()
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description, reason=v.rule
                )
                for v in self.violations[:MAX_REPORTED_VIOLATIONS]
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        return [*super().details(), packed]


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class ProductAccessDenied(PermissionDenied):
    reason = "PRODUCT_ACCESS_DENIED"

    def __init__(self, product_id: str):
        super().__init__("the product is not in the caller's library", metadata={"productId": product_id})


class NotFound(DomainError):
    """Raise with the SPEC reason, e.g. NotFound("...", reason="SESSION_NOT_FOUND")."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class Aborted(DomainError):
    code = grpc.StatusCode.ABORTED
    reason = "ETAG_MISMATCH"


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"


class RateLimited(ResourceExhausted):
    """Over a per-user rate limit: RetryInfo says when to retry; so does `retry-after` (seconds), which
    a REST client receives as the Retry-After header of the 429."""

    def __init__(self, retry_after_seconds: int):
        super().__init__(
            f"too many requests; retry in {retry_after_seconds} s",
            metadata={"retryAfterSeconds": str(retry_after_seconds)},
        )
        self.retry_after_seconds = retry_after_seconds
        self.trailing_metadata = (("retry-after", str(retry_after_seconds)),)

    def details(self) -> list[any_pb2.Any]:
        delay = duration_pb2.Duration(seconds=self.retry_after_seconds)
        retry = error_details_pb2.RetryInfo(retry_delay=delay)
        packed = any_pb2.Any()
        packed.Pack(retry)
        return [*super().details(), packed]


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "INVALID_STATE_TRANSITION"


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class Unimplemented(DomainError):
    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "NOT_IMPLEMENTED"


# What a dependency raises when it is down or too slow rather than when a request is wrong. OperationalError
# (SQLAlchemy's and psycopg's) also covers serialization failures and lock or statement timeouts: retryable
# as well. psycopg_pool's PoolTimeout (no pooled connection in time) is a psycopg OperationalError.
_DEPENDENCY_FAILURES = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection within the pool timeout
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)


def dependency_unavailable(error: BaseException) -> Unavailable | None:
    """The UNAVAILABLE error a client should see for `error`, if `error` (or what caused it) is a
    dependency failing; None for anything else."""
    cause: BaseException | None = error
    for _ in range(5):  # the cause chain, not only the outermost wrapper
        if cause is None:
            return None
        if isinstance(cause, _DEPENDENCY_FAILURES):
            return Unavailable("a service this call depends on is unavailable; retry later")
        cause = cause.__cause__ or cause.__context__
    return None


def internal_status() -> status_pb2.Status:
    """What a client sees for anything unexpected: no trace, SQL or repr; like every error, one ErrorInfo."""
    return DomainError("internal error").to_status()


def malformed_request() -> InvalidArgument:
    """A request whose bytes are not a message of its type (corrupt wire format, invalid UTF-8): said
    without the parser's text."""
    return InvalidArgument([], "the request is not a valid message of its type")
