"""Opaque page tokens (AIP-158): a keyset cursor serialised as url-safe base64 JSON.

The cursor holds the sort key of the last row returned plus a fingerprint of the query's filters, so a
token can't be replayed against a different query.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from server.core.errors import FieldViolation, InvalidArgument


def query_fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:16]


def encode_page_token(cursor: list[Any], fingerprint: str) -> str:
    raw = json.dumps({"c": cursor, "q": fingerprint}, default=str, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def invalid_page_token() -> InvalidArgument:
    """A token that decodes but whose cursor doesn't fit the query's keys (or doesn't decode at all)."""
    return InvalidArgument([FieldViolation("page_token", "is not a valid page token")])


def decode_page_token(token: str, fingerprint: str) -> list[Any] | None:
    """The cursor of a token, or None for the first page. A foreign or garbled token is INVALID_ARGUMENT."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        cursor, fp = body["c"], body["q"]
    except (ValueError, KeyError, TypeError) as exc:
        raise invalid_page_token() from exc
    if fp != fingerprint or not isinstance(cursor, list):
        raise InvalidArgument([FieldViolation("page_token", "does not belong to this query")])
    return cursor
