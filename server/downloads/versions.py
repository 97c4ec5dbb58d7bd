"""ListProductVersions: the committed versions of a product the user owns (to install or roll back to)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from server.core.deps import Deps
from server.core.pagination import decode_page_token, encode_page_token, invalid_page_token, query_fingerprint
from server.downloads import content_repository as repo
from server.downloads.catalog import VersionSummary
from server.library.entitlements import require_owned


@dataclass(frozen=True, slots=True)
class ListedVersion:
    version: VersionSummary
    download_size_bytes: int
    is_latest: bool


@dataclass(frozen=True, slots=True)
class VersionPage:
    versions: list[ListedVersion]
    next_page_token: str
    total_size: int


async def list_versions(
    deps: Deps, user_id: uuid.UUID, product_id: uuid.UUID, branch: str, page_size: int, page_token: str
) -> VersionPage:
    fingerprint = query_fingerprint("ListProductVersions", product_id, branch)
    cursor = decode_page_token(page_token, fingerprint)
    after = None
    if cursor is not None:
        try:
            after = (datetime.fromisoformat(cursor[0]), uuid.UUID(cursor[1]))
        except (ValueError, TypeError, IndexError) as exc:
            raise invalid_page_token() from exc
    async with deps.uow() as uow:
        await require_owned(uow.session, user_id, product_id)
        rows, total = await repo.list_committed(uow.session, product_id, branch or None, after, page_size + 1)
        latest = await repo.latest_ids(uow.session, product_id)
    more = len(rows) > page_size
    rows = rows[:page_size]
    token = ""
    if more:
        last = rows[-1][0]
        token = encode_page_token([last.published_at.isoformat(), str(last.version_id)], fingerprint)
    listed = [ListedVersion(VersionSummary.of(row), size, row.version_id in latest) for row, size in rows]
    return VersionPage(listed, token, total)
