"""Per-call context that crosses layers without being passed around: the request id (correlation id)."""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str] = ContextVar("request_id", default="")
