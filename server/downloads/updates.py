"""CheckUpdates: per installed product, the latest version of the user's branch for it (download settings;
default `public`), what updating costs (compressed bytes of the chunks the installed version lacks, bytes
of the files that change) and its release notes. `download.update.available` goes out once per
(user, product, version), however often clients check.

A product the user does not own (any more) is answered as if it had no published version: its versions
are not the user's to see.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert

from server.core.deps import Deps
from server.core.events.cloudevents import DOWNLOAD_EVENTS_TOPIC, rfc3339
from server.core.uow import UnitOfWork
from server.downloads import catalog
from server.downloads import content_repository as repo
from server.downloads.content_tables import UpdateNotice
from server.downloads.settings import get_download_settings
from server.library.entitlements import owned_product_ids

UPDATE_AVAILABLE = "com.platform.download.update.available.v1"


@dataclass(frozen=True, slots=True)
class ProductUpdate:
    product_id: uuid.UUID
    installed_version_id: uuid.UUID
    branch: str
    latest: catalog.VersionSummary | None = None
    bytes_to_download: int = 0
    bytes_to_write: int = 0

    @property
    def update_available(self) -> bool:
        return self.latest is not None and self.latest.version_id != self.installed_version_id


async def check_updates(
    deps: Deps, user_id: uuid.UUID, installed: Sequence[tuple[uuid.UUID, uuid.UUID]]
) -> list[ProductUpdate]:
    async with deps.uow() as uow:
        session = uow.session
        owned = await owned_product_ids(session, user_id, [product for product, _ in installed])
        settings = await get_download_settings(session, user_id)
        updates = []
        for product_id, installed_version_id in installed:
            branch = settings.branch_for(product_id)
            update = ProductUpdate(product_id, installed_version_id, branch)
            latest = await repo.latest_committed(session, product_id, branch) if product_id in owned else None
            if latest is not None:
                update = await _priced(uow, user_id, update, catalog.VersionSummary.of(latest))
            updates.append(update)
        await uow.commit()
    return updates


async def _priced(
    uow: UnitOfWork, user_id: uuid.UUID, update: ProductUpdate, latest: catalog.VersionSummary
) -> ProductUpdate:
    if latest.version_id == update.installed_version_id:
        return ProductUpdate(update.product_id, update.installed_version_id, update.branch, latest)
    plan = await catalog.transfer_plan(
        uow.session, latest.version_id, installed_version_id=update.installed_version_id
    )
    priced = ProductUpdate(
        update.product_id,
        update.installed_version_id,
        update.branch,
        latest,
        plan.bytes_to_download,
        plan.bytes_to_write,
    )
    if await _first_notice(uow, user_id, priced.product_id, latest.version_id):
        uow.add_event(
            UPDATE_AVAILABLE, user_id, _event_data(user_id, priced, latest), topic=DOWNLOAD_EVENTS_TOPIC
        )
    return priced


async def _first_notice(
    uow: UnitOfWork, user_id: uuid.UUID, product_id: uuid.UUID, version_id: uuid.UUID
) -> bool:
    inserted = await uow.session.scalar(
        pg_insert(UpdateNotice)
        .values(user_id=user_id, product_id=product_id, version_id=version_id)
        .on_conflict_do_nothing()
        .returning(UpdateNotice.version_id)
    )
    return inserted is not None


def _event_data(user_id: uuid.UUID, update: ProductUpdate, latest: catalog.VersionSummary) -> dict:
    published: datetime = latest.published_at
    return {
        "userId": str(user_id),
        "productId": str(update.product_id),
        "currentVersionId": str(update.installed_version_id),
        "latestVersionId": str(latest.version_id),
        "latestVersionName": latest.version_name,
        "branch": update.branch,
        "updateSizeBytes": update.bytes_to_download,
        "bytesToWrite": update.bytes_to_write,
        "releaseNotes": latest.release_notes,
        "publishedAt": rfc3339(published),
    }
