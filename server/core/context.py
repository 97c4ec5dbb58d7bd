"""Per-call context that crosses layers without being passed around: the request id (correlation id)."""

from __future__ import annotations

import uuid
from contextvars import ContextVar

request_id: ContextVar[str] = ContextVar("request_id", default="")


def current_request_id() -> str:
    """The caller's x-request-id, or one made up on first use (most hot-path calls never need one)."""
    value = request_id.get()
    if not value:
        value = uuid.uuid4().hex
        request_id.set(value)
    return value
