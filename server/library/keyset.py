"""Keyset pagination for the library's listings: stable pages ordered by several keys, ties broken by id.

A listing names its sort keys (SQL expressions, the last one unique, e.g. the row id); a page ends with the
key values of its last row, and the next page starts strictly after them. Unlike OFFSET, rows inserted or
removed meanwhile never shift a page boundary, so no row is skipped or repeated.

The first page counts the matching rows in the same statement (a window count, evaluated before LIMIT);
a later page's WHERE holds the cursor, so it counts them in a statement of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.core.db import Db
from server.core.pagination import invalid_page_token


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


@dataclass(frozen=True)
class SortKey:
    """One ORDER BY term (an SQL expression). Nullable keys sort their NULLs last in either direction."""

    expr: str
    descending: bool = False
    nullable: bool = False
    decode: Callable[[Any], Any] = str

    def order_by(self) -> str:
        term = f"{self.expr} {'DESC' if self.descending else 'ASC'}"
        return f"{term} NULLS LAST" if self.nullable else term

    def equals(self, value: Any, params: list[Any]) -> str:
        if value is None:
            return f"{self.expr} IS NULL"
        params.append(value)
        return f"{self.expr} = %s"

    def beyond(self, value: Any, params: list[Any]) -> str:
        """Rows strictly after `value` in this key's order."""
        if value is None:
            return "false"  # NULLs come last: nothing is beyond them on this key
        params.append(value)
        strictly = f"{self.expr} {'<' if self.descending else '>'} %s"
        return f"({strictly} OR {self.expr} IS NULL)" if self.nullable else strictly


def time_key(expr: str, *, descending: bool = False, nullable: bool = False) -> SortKey:
    return SortKey(expr, descending, nullable, datetime.fromisoformat)


def id_key(expr: str, *, descending: bool = False) -> SortKey:
    return SortKey(expr, descending, decode=uuid.UUID)


def after(keys: Sequence[SortKey], cursor: Sequence[Any], params: list[Any]) -> str:
    """The condition for rows after the row whose key values are `cursor` (lexicographic over `keys`);
    its parameters are appended to `params`.

    A cursor that doesn't fit the keys (a hand-made token) is INVALID_ARGUMENT."""
    try:
        values = [None if raw is None else key.decode(raw) for key, raw in zip(keys, cursor, strict=True)]
    except (ValueError, TypeError, AttributeError) as exc:
        raise invalid_page_token() from exc
    terms = []
    for i in range(len(keys)):
        parts = [keys[j].equals(values[j], params) for j in range(i)]
        parts.append(keys[i].beyond(values[i], params))
        terms.append("(" + " AND ".join(parts) + ")")
    return "(" + " OR ".join(terms) + ")"


@dataclass(frozen=True)
class Listing:
    """A paginated query: `SELECT {columns} FROM {source} WHERE {conditions}` with its sort keys."""

    columns: str
    source: str
    keys: Sequence[SortKey]

    async def page(
        self,
        db: Db,
        conditions: Sequence[str],
        params: Sequence[Any],
        cursor: Sequence[Any] | None,
        page_size: int,
    ) -> tuple[list[tuple[Any, ...]], list[Any] | None, int]:
        """One page of rows, the next cursor (None on the last page) and the number of rows the conditions
        match over all pages. A row starts with the selected columns; what follows them (the sort keys, a
        count) is left on it, unread, rather than sliced off row by row."""
        keys = self.keys
        where = " AND ".join(conditions)
        key_columns = ", ".join(k.expr for k in keys)
        order = ", ".join(k.order_by() for k in keys)
        bound = list(params)
        if cursor is None:
            sql = (
                f"SELECT {self.columns}, {key_columns}, count(*) OVER () FROM {self.source} WHERE {where} "
                f"ORDER BY {order} LIMIT %s"
            )
            rows = await db.all(sql, [*bound, page_size + 1])
            total = rows[0][-1] if rows else 0
        else:
            total = await db.value(f"SELECT count(*) FROM {self.source} WHERE {where}", bound)
            condition = after(keys, cursor, bound)
            sql = (
                f"SELECT {self.columns}, {key_columns} FROM {self.source} WHERE {where} AND {condition} "
                f"ORDER BY {order} LIMIT %s"
            )
            rows = await db.all(sql, [*bound, page_size + 1])
        next_cursor = None
        if len(rows) > page_size:
            rows = rows[:page_size]
            start = len(rows[-1]) - len(keys) - (cursor is None)  # the sort keys, before the count if any
            next_cursor = [_encode(value) for value in rows[-1][start : start + len(keys)]]
        return rows, next_cursor, int(total or 0)
