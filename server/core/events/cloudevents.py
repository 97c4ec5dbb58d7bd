"""CloudEvents 1.0 structured JSON (SPEC §7) and the topics this service publishes to."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

LIBRARY_EVENTS_TOPIC = "com.platform.library.events.v1"
DOWNLOAD_EVENTS_TOPIC = "com.platform.download.events.v1"
PAYMENT_EVENTS_TOPIC = "com.platform.payment.events.v1"
CATALOG_EVENTS_TOPIC = "com.platform.catalog.events.v1"

REQUIRED_ATTRIBUTES = ("id", "source", "specversion", "type", "time", "datacontenttype", "subject", "data")


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def make_cloud_event(
    *,
    event_type: str,
    source: str,
    subject: str,
    data: dict[str, Any],
    correlation_id: str = "",
    event_id: uuid.UUID | None = None,
    traceparent: str = "",
) -> dict[str, Any]:
    """A CloudEvent; `traceparent` is the distributed-tracing extension attribute (W3C Trace Context)."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(event_id or uuid.uuid4()),
        "source": source,
        "type": event_type,
        "time": rfc3339(datetime.now(UTC)),
        "datacontenttype": "application/json",
        "subject": subject,
        "data": data,
    }
    if correlation_id:
        event["correlationid"] = correlation_id
    if traceparent:
        event["traceparent"] = traceparent
    return event
