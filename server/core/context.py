"""Per-call context that crosses layers without being passed around: the request id (correlation id) and
the time by which the call must answer (its client's deadline, less a margin to send the answer)."""

from __future__ import annotations

import time
import uuid
from contextvars import ContextVar

request_id: ContextVar[str] = ContextVar("request_id", default="")
# time.monotonic() by which the current RPC must have answered; None: the client set no deadline.
answer_by: ContextVar[float | None] = ContextVar("answer_by", default=None)


def time_left(bound: float, *, margin: float = 0.0) -> float:
    """How long a dependency call may wait: `bound`, or less when the RPC must answer sooner (`margin`
    earlier than that, so the caller still has time to turn the failure into its answer)."""
    deadline = answer_by.get()
    if deadline is None:
        return bound
    return max(0.001, min(bound, deadline - margin - time.monotonic()))


def current_request_id() -> str:
    """The caller's x-request-id, or one made up on first use (most hot-path calls never need one)."""
    value = request_id.get()
    if not value:
        value = uuid.uuid4().hex
        request_id.set(value)
    return value
