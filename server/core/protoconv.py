"""Small conversions between domain values and protobuf well-known types, shared by every servicer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

V = TypeVar("V")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(when: datetime | None) -> dict[str, int] | None:
    """A google.protobuf.Timestamp field's value for `when` (naive: UTC), for a message constructor
    (`pb.Item(created_at=timestamp(t))`); None (field left unset) when there is no time.

    The fields, not a Timestamp: the constructor copies a Timestamp message into the field, and
    Timestamp.FromDatetime costs more still, on every time field of every listed row."""
    if when is None:
        return None
    delta = (when if when.tzinfo is not None else when.replace(tzinfo=UTC)) - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    if not delta.microseconds:  # a whole second (signed links' expiries): one field less to convert
        return {"seconds": seconds}
    return {"seconds": seconds, "nanos": delta.microseconds * 1000}


def add_all(repeated: Any, values: Iterable[V], fields: Callable[[V], dict[str, Any]]) -> None:
    """Builds one message per value straight into a response's repeated message field: `fields(value)` is
    the message's constructor arguments. A list of messages given to the response's constructor instead
    would be built and then copied, message by message (docs/ARCHITECTURE.md, "Database access")."""
    add = repeated.add
    for value in values:
        add(**fields(value))
