"""A big game's download does not depend on the machine being quiet: StartDownload, its manifest and
CheckUpdates over a 10,000-chunk version (inserted in bulk just before, so the planner's statistics know
nothing of it, as after a real publication) run under a statement timeout of one second. A plan that
joined the two versions' chunks row by row took over a minute here; set-based totals take milliseconds.
The use cases run in this process on an engine with that timeout (DB_STATEMENT_TIMEOUT_SECONDS=1)."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from server.core.db import DbTimeouts, create_engine, create_sessionmaker
from server.core.deps import Deps
from server.core.s3 import ObjectStore
from server.core.uow import UnitOfWorkFactory
from server.downloads import catalog, manifests, updates
from server.downloads import content_repository as content
from server.downloads.session_views import StartRequest
from server.downloads.sessions import DownloadSessions
from tests.support.ownership import grant
from tests.support.versions import MiB, publish_bulk

FILES, PER_FILE, EVERY = 1000, 10, 50  # 10,000 chunks of 1 MiB; the update changes 20 of them
CHANGED = FILES // EVERY


@pytest.fixture
async def tight_deps(settings, redis):
    tight = dataclasses.replace(settings, db_statement_timeout_seconds=1.0)
    engine = create_engine(tight.database_url, pool_size=2, timeouts=DbTimeouts.from_settings(tight))
    yield Deps(
        tight,
        UnitOfWorkFactory(create_sessionmaker(engine), "/test", lambda: None),
        redis,
        ObjectStore(tight),  # never opened: links are signed locally
    )
    await engine.dispose()


@pytest.fixture
async def big_update(sessions):
    """(user, product, old version, new version): the user owns the product; the versions differ in 20
    chunks (one in each of 20 files)."""
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    old = await publish_bulk(sessions, product, files=FILES, chunks_per_file=PER_FILE)
    new = await publish_bulk(
        sessions, product, files=FILES, chunks_per_file=PER_FILE, variant="v2", every=EVERY
    )
    return user, product, old, new


def _start(product, **kw) -> StartRequest:
    fields = {
        "version_id": None,
        "installation_path": "/games/big",
        "priority": 0,
        "installed_version_id": None,
        "installed_files": [],
        "device_id": "",
        "start_now": True,
        "request_id": None,
    }
    return StartRequest(product_id=product, **(fields | kw))


async def _manifest(deps, user, download_id) -> list[manifests.ManifestFile]:
    files, token = [], ""
    while True:
        page = await manifests.manifest_page(deps, user, download_id, page_size=200, page_token=token)
        files += page.files
        if not (token := page.next_page_token):
            return files


async def test_an_update_of_a_big_version_starts_and_pages_within_a_tight_statement_timeout(
    tight_deps, big_update
):
    user, product, old, new = big_update
    use_cases = DownloadSessions(tight_deps)
    started = await use_cases.start(user, _start(product, installed_version_id=old))
    assert started.version_id == new
    assert started.total_size_bytes == CHANGED * MiB // 2

    files = await _manifest(tight_deps, user, started.download_id)
    assert len(files) == FILES and sum(len(f.chunks) for f in files) == FILES * PER_FILE
    assert sum(f.write_required for f in files) == CHANGED
    assert sum(c[manifests.DOWNLOAD_REQUIRED] for f in files for c in f.chunks) == CHANGED

    [update] = await updates.check_updates(tight_deps, user, [(product, old)])
    assert update.latest.version_id == new
    assert update.bytes_to_download == CHANGED * MiB // 2
    assert update.bytes_to_write == CHANGED * PER_FILE * MiB


async def test_a_big_install_over_files_on_disk_starts_within_a_tight_statement_timeout(
    tight_deps, big_update, sessions
):
    user, product, old, new = big_update
    async with sessions() as session:  # the client has the old version's files, but names no version
        on_disk = [
            catalog.InstalledFile(row.path, row.size_bytes, row.sha256)
            for row in await content.version_files(session, old)
        ]
    use_cases = DownloadSessions(tight_deps)
    started = await use_cases.start(user, _start(product, installed_files=on_disk))
    assert started.version_id == new
    assert started.total_size_bytes == CHANGED * MiB // 2

    files = await _manifest(tight_deps, user, started.download_id)
    assert sum(f.write_required for f in files) == CHANGED
    assert sum(c[manifests.DOWNLOAD_REQUIRED] for f in files for c in f.chunks) == CHANGED
