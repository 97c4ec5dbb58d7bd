"""Request validation helpers for servicers: collect every field problem, then raise once.

The contract's field rules (buf.validate annotations: UUIDs, lengths, ranges, enums, sizes) are enforced
by the call pipeline before a servicer runs (server/core/contract_rules.py); a servicer uses the
Validator only for what the contract cannot state: rules that span fields or entries, or need the clock.

v = Validator()
product_id = v.uuid("product_id", request.product_id)
notes = v.text("notes", request.notes, max_len=2000)
v.check()          # raises InvalidArgument with all field violations
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from server.core.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# How far ahead of the server's clock a client timestamp may be before it counts as "in the future".
CLOCK_SKEW = timedelta(minutes=5)


def parse_uuid(value: str) -> uuid.UUID | None:
    """A UUID field the contract already checked (`string.uuid`); None when it is empty (optional)."""
    return uuid.UUID(value) if value else None


def page_size(value: int) -> int:
    """The page size to use for a request's `page_size` (the contract refuses negative ones): 0 means the
    default, larger than the maximum is capped."""
    return min(value, MAX_PAGE_SIZE) if value else DEFAULT_PAGE_SIZE


class Validator:
    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def fail(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def check(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)

    def uuid(self, field: str, value: str, *, required: bool = True) -> uuid.UUID | None:
        if not value:
            if required:
                self.fail(field, "is required")
            return None
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            self.fail(field, "must be a UUID")
            return None
        return parsed

    def uuids(self, field: str, values, *, max_items: int = 200) -> list[uuid.UUID]:
        """Repeated UUIDs; elements may also be comma-separated (`?productIds=a,b`)."""
        items = [part.strip() for value in values for part in value.split(",") if part.strip()]
        if len(items) > max_items:
            self.fail(field, f"at most {max_items} items")
            return []
        parsed = [self.uuid(f"{field}[{i}]", item) for i, item in enumerate(items)]
        return [p for p in parsed if p is not None]

    def text(self, field: str, value: str, *, max_len: int, required: bool = False) -> str:
        if required and not value.strip():
            self.fail(field, "is required")
        elif len(value) > max_len:
            self.fail(field, f"must be at most {max_len} characters")
        return value

    def non_negative(self, field: str, value: int) -> int:
        if value < 0:
            self.fail(field, "must not be negative")
        return value

    def enum(self, field: str, value: int, allowed, *, required: bool = False) -> int:
        """Rejects values the contract does not define (proto3 keeps unknown enum numbers)."""
        if value == 0 and required:
            self.fail(field, "is required")
        elif value != 0 and value not in allowed:
            self.fail(field, "unknown enum value")
        return value

    def timestamp(
        self,
        field: str,
        value: timestamp_pb2.Timestamp,
        *,
        now: datetime | None = None,
        required: bool = True,
        allow_future: bool = False,
    ) -> datetime | None:
        """An aware UTC datetime; the zero Timestamp counts as unset. Unless `allow_future`, a time beyond
        `now` (then required) plus CLOCK_SKEW is refused."""
        if value.seconds == 0 and value.nanos == 0:
            if required:
                self.fail(field, "is required")
            return None
        try:
            when = value.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            self.fail(field, "is out of range")
            return None
        if not allow_future:
            if now is None:
                raise TypeError("now is required unless allow_future")
            if when > now + CLOCK_SKEW:
                self.fail(field, "must not be in the future")
        return when

    def page_size(self, value: int) -> int:
        if value < 0:
            self.fail("page_size", "must not be negative")
            return DEFAULT_PAGE_SIZE
        if value == 0:
            return DEFAULT_PAGE_SIZE
        return min(value, MAX_PAGE_SIZE)

    def request_id(self, value: str) -> uuid.UUID | None:
        return self.uuid("request_id", value, required=False)
