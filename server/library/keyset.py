"""Keyset pagination for the library's listings: stable pages ordered by several keys, ties broken by id.

A listing names its sort keys (the last one unique, e.g. the row id); a page ends with the key values of its
last row, and the next page starts strictly after them. Unlike OFFSET, rows inserted or removed meanwhile
never shift a page boundary, so no row is skipped or repeated.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, and_, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.pagination import invalid_page_token


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


@dataclass(frozen=True)
class SortKey:
    """One ORDER BY term. Nullable keys sort their NULLs last in either direction."""

    expr: ColumnElement[Any]
    descending: bool = False
    nullable: bool = False
    decode: Callable[[Any], Any] = str

    def order_by(self) -> ColumnElement[Any]:
        term = self.expr.desc() if self.descending else self.expr.asc()
        return term.nulls_last() if self.nullable else term

    def equals(self, value: Any) -> ColumnElement[bool]:
        return self.expr.is_(None) if value is None else self.expr == value

    def beyond(self, value: Any) -> ColumnElement[bool]:
        """Rows strictly after `value` in this key's order."""
        if value is None:
            return false()  # NULLs come last: nothing is beyond them on this key
        strictly = self.expr < value if self.descending else self.expr > value
        return or_(strictly, self.expr.is_(None)) if self.nullable else strictly


def time_key(expr: ColumnElement[Any], *, descending: bool = False, nullable: bool = False) -> SortKey:
    return SortKey(expr, descending, nullable, datetime.fromisoformat)


def id_key(expr: ColumnElement[Any], *, descending: bool = False) -> SortKey:
    return SortKey(expr, descending, decode=uuid.UUID)


def after(keys: Sequence[SortKey], cursor: Sequence[Any]) -> ColumnElement[bool]:
    """Rows that come after the row whose key values are `cursor` (lexicographic over `keys`).

    A cursor that doesn't fit the keys (a hand-made token) is INVALID_ARGUMENT."""
    try:
        values = [None if raw is None else key.decode(raw) for key, raw in zip(keys, cursor, strict=True)]
    except (ValueError, TypeError, AttributeError) as exc:
        raise invalid_page_token() from exc
    return or_(
        *(
            and_(*(keys[j].equals(values[j]) for j in range(i)), keys[i].beyond(values[i]))
            for i in range(len(keys))
        )
    )


async def fetch_page(
    session: AsyncSession,
    stmt: Select[Any],
    keys: Sequence[SortKey],
    cursor: Sequence[Any] | None,
    page_size: int,
) -> tuple[list[Row[Any]], list[Any] | None, int]:
    """One page of `stmt` (rows with the key values appended), the next cursor (None on the last page) and
    the number of rows `stmt` matches over all pages."""
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    if cursor is not None:
        stmt = stmt.where(after(keys, cursor))
    paged = stmt.add_columns(*(key.expr for key in keys)).order_by(*(k.order_by() for k in keys))
    rows = list((await session.execute(paged.limit(page_size + 1))).all())
    next_cursor = None
    if len(rows) > page_size:
        rows = rows[:page_size]
        next_cursor = [_encode(value) for value in rows[-1][-len(keys) :]]
    return rows, next_cursor, int(total or 0)
