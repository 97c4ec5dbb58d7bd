"""Download session SQL: the user's queue (locked per user), the session list, update history."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.pagination import invalid_page_token
from server.downloads import session_rules as rules
from server.downloads.content_tables import VersionFile
from server.downloads.session_tables import DownloadSession, UpdateHistory


class SessionRepository:
    def __init__(self, session: AsyncSession):
        self._session = session

    async def lock_user_queue(self, user_id: uuid.UUID) -> None:
        """Serializes every queue change of one user until the transaction ends (a transaction-scoped
        advisory lock: it also covers a user with no session rows yet, which row locks could not)."""
        await self._session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"download-queue:{user_id}"},
        )

    async def active(self, user_id: uuid.UUID) -> list[DownloadSession]:
        """The user's non-terminal sessions (the queue and what holds slots)."""
        return list(
            await self._session.scalars(
                select(DownloadSession).where(
                    DownloadSession.user_id == user_id, DownloadSession.status.in_(rules.ACTIVE)
                )
            )
        )

    async def active_of_product(self, user_id: uuid.UUID, product_id: uuid.UUID) -> list[DownloadSession]:
        return [s for s in await self.active(user_id) if s.product_id == product_id]

    async def get(self, user_id: uuid.UUID, download_id: uuid.UUID) -> DownloadSession | None:
        """One of the user's sessions; another user's id reads as absent."""
        return await self._session.scalar(
            select(DownloadSession).where(
                DownloadSession.id == download_id, DownloadSession.user_id == user_id
            )
        )

    def add(self, row: DownloadSession | UpdateHistory) -> None:
        self._session.add(row)

    async def flush(self) -> None:
        await self._session.flush()

    async def page(
        self,
        user_id: uuid.UUID,
        *,
        statuses: Sequence[str],
        product_id: uuid.UUID | None,
        cursor: list[Any] | None,
        page_size: int,
    ) -> tuple[list[DownloadSession], list[Any] | None, int]:
        """Newest first (created_at, then id, both descending); the cursor is the last row's keys."""
        query = select(DownloadSession).where(DownloadSession.user_id == user_id)
        if statuses:
            query = query.where(DownloadSession.status.in_(statuses))
        if product_id is not None:
            query = query.where(DownloadSession.product_id == product_id)
        total = await self._session.scalar(select(func.count()).select_from(query.subquery()))
        if cursor is not None:
            created_at, last_id = _decode_cursor(cursor)
            query = query.where(
                tuple_(DownloadSession.created_at, DownloadSession.id) < (created_at, last_id)
            )
        query = query.order_by(DownloadSession.created_at.desc(), DownloadSession.id.desc()).limit(
            page_size + 1
        )
        rows = list(await self._session.scalars(query))
        next_cursor = None
        if len(rows) > page_size:
            rows = rows[:page_size]
            next_cursor = [rows[-1].created_at.isoformat(), str(rows[-1].id)]
        return rows, next_cursor, int(total or 0)

    async def users_waiting(self, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
        """Users with queued sessions, in id order after `after` (the promoter re-runs their queue: a
        schedule window opened, a limit was raised)."""
        query = select(DownloadSession.user_id).where(DownloadSession.status == rules.QUEUED)
        if after is not None:
            query = query.where(DownloadSession.user_id > after)
        return list(
            await self._session.scalars(query.distinct().order_by(DownloadSession.user_id).limit(limit))
        )

    async def version_files(self, version_id: uuid.UUID, paths: Sequence[str]) -> dict[str, VersionFile]:
        """The files of a version at these paths, by path (unknown paths are absent)."""
        rows = await self._session.scalars(
            select(VersionFile).where(VersionFile.version_id == version_id, VersionFile.path.in_(list(paths)))
        )
        return {row.path: row for row in rows}


def _decode_cursor(cursor: list[Any]) -> tuple[datetime, uuid.UUID]:
    try:
        created_at, last_id = cursor
        return datetime.fromisoformat(created_at), uuid.UUID(last_id)
    except (ValueError, TypeError, AttributeError) as exc:
        raise invalid_page_token() from exc
