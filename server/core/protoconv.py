"""Small conversions between domain values and protobuf well-known types, shared by every servicer."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2


def timestamp(when: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for `when`; None (field left unset) when there is no time."""
    if when is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp
