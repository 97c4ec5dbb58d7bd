"""Pure rules of game settings: RFC 7386 merge patch, the size limit, what JSONB can store."""

from __future__ import annotations

import json
import math
from typing import Any

from server.core.errors import FieldViolation

# SPEC §6: a settings document is at most 64 KiB as compact JSON (UTF-8).
MAX_DOCUMENT_BYTES = 64 * 1024
# Largest integer a double holds exactly: integral numbers up to it are stored as JSON integers.
_MAX_EXACT_INTEGER = 2**53

Document = dict[str, Any]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch(target, patch): object members merge recursively, a `null` member removes the
    key, anything else (arrays included) replaces. Neither argument is modified."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = merge_patch(merged.get(name), value)
    return merged


def compact_json(document: Document) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def document_size(document: Document) -> int:
    """Bytes of the document as compact UTF-8 JSON: what the 64 KiB limit counts."""
    return len(compact_json(document).encode())


def size_violation(document: Document, field: str) -> FieldViolation | None:
    size = document_size(document)
    if size > MAX_DOCUMENT_BYTES:
        return FieldViolation(
            field, f"the resulting document is {size} bytes as compact JSON; at most {MAX_DOCUMENT_BYTES}"
        )
    return None


def storable(value: Any, path: str) -> tuple[Any, list[FieldViolation]]:
    """The JSON value as it is stored, and what makes it unstorable.

    A google.protobuf.Struct carries every number as a double, so integral numbers become integers again
    (`90.0` → `90`, as the client sent it). PostgreSQL's JSONB cannot hold NaN/Infinity, so those are
    field violations (at `path`, the request field they came from). NUL characters, which JSONB cannot
    hold either, the contract's rules refuse before this runs.
    """
    if isinstance(value, dict):
        out: Document = {}
        problems: list[FieldViolation] = []
        for key, item in value.items():
            out[key], found = storable(item, f"{path}.{key}")
            problems.extend(found)
        return out, problems
    if isinstance(value, list):
        items, problems = [], []
        for i, item in enumerate(value):
            stored, found = storable(item, f"{path}[{i}]")
            items.append(stored)
            problems.extend(found)
        return items, problems
    if isinstance(value, float):
        if not math.isfinite(value):
            return None, [FieldViolation(path, "numbers must be finite")]
        if value.is_integer() and abs(value) <= _MAX_EXACT_INTEGER:
            return int(value), []
    return value, []
