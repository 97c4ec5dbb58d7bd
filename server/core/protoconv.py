"""Small conversions between domain values and protobuf well-known types, shared by every servicer."""

from __future__ import annotations

from datetime import UTC, datetime

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(when: datetime | None) -> dict[str, int] | None:
    """A google.protobuf.Timestamp field's value for `when` (naive: UTC), for a message constructor
    (`pb.Item(created_at=timestamp(t))`); None (field left unset) when there is no time.

    The fields, not a Timestamp: the constructor copies a Timestamp message into the field, and
    Timestamp.FromDatetime costs more still, on every time field of every listed row."""
    if when is None:
        return None
    delta = (when if when.tzinfo is not None else when.replace(tzinfo=UTC)) - _EPOCH
    return {"seconds": delta.days * 86400 + delta.seconds, "nanos": delta.microseconds * 1000}
