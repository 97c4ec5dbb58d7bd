"""Download session use cases: start, list / get, pause / resume / cancel / reprioritize, progress reports,
completion, and the queue that promotes waiting sessions.

Every queue change runs in one transaction holding the user's queue lock (SessionRepository.
lock_user_queue), and the promotion of the next waiting session happens in that same transaction, so
concurrent calls can never put more than `max_concurrent_downloads` sessions in DOWNLOADING. Each status
change emits `download.session.status.changed` (Kafka, via the outbox) and a `downloadStatusChanged`
notification. Progress reports touch Redis only (progress.py). The live state of changed sessions is
rewritten just before the commit, under the queue lock (so changes reach Redis in commit order), and
dropped if the commit fails; where no rewrite is possible (the revocation consumer, whose caller commits)
it is only dropped. A report that finds no live state re-reads the row, waiting on the row lock of a change
in flight, so a report never acts on a state older than the last commit. Each report counts once against
the user's RATE_LIMITS budget for ReportDownloadProgress: a plain one inside its Redis script, one with
files or a final status before it does anything (the servicer method is `counts_own_limit`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime

from sqlalchemy import select

from server.core import replay
from server.core.deps import Deps
from server.core.errors import FieldViolation, InvalidArgument, NotFound
from server.core.events.cloudevents import DOWNLOAD_EVENTS_TOPIC, rfc3339
from server.core.pagination import decode_page_token, encode_page_token, query_fingerprint
from server.core.replay import request_key
from server.core.uow import UnitOfWork
from server.downloads import catalog
from server.downloads import session_rules as rules
from server.downloads.progress import REPORT_METHOD, LiveProgress, Mirror, ReportCode
from server.downloads.session_repository import SessionRepository
from server.downloads.session_tables import DownloadSession, UpdateHistory
from server.downloads.session_views import (
    FileReport,
    Page,
    ProgressReport,
    ProgressView,
    SessionView,
    StartRequest,
)
from server.downloads.settings import get_download_settings, in_schedule_window
from server.library import use_cases as library
from server.library.entitlements import require_owned

log = logging.getLogger(__name__)


def download_not_found() -> NotFound:
    return NotFound("no such download", reason="DOWNLOAD_NOT_FOUND")


class _Changes:
    """The status changes of one transaction: each session's status before it, so a session that moves
    twice (paused → queued → downloading) reports one change, from where it started to where it ends."""

    def __init__(self) -> None:
        self.before: dict[uuid.UUID, str | None] = {}
        self.rows: dict[uuid.UUID, DownloadSession] = {}

    def touch(self, row: DownloadSession, previous: str | None) -> None:
        self.before.setdefault(row.id, previous)
        self.rows[row.id] = row

    def mirrors(self) -> list[Mirror]:
        return [_mirror(row) for row in self.rows.values()]


def _mirror(row: DownloadSession) -> Mirror:
    return Mirror(
        row.id,
        row.user_id,
        row.product_id,
        row.version_id,
        row.status,
        row.total_size_bytes,
        row.downloaded_bytes,
    )


class DownloadSessions:
    def __init__(self, deps: Deps):
        self._uow = deps.uow
        self._clock = deps.clock
        self._limiter = deps.limiter  # counts reports with files or a final status
        self.live = LiveProgress(
            deps.redis,
            stream_maxlen=deps.settings.notification_stream_maxlen,
            stream_ttl_seconds=deps.settings.notification_stream_ttl_seconds,
            limit=self._limiter.limit_of(REPORT_METHOD) if self._limiter else None,
        )

    # ------------------------------------------------------------------ reads
    async def list(
        self,
        user_id: uuid.UUID,
        *,
        statuses: list[str],
        product_id: uuid.UUID | None,
        page_size: int,
        page_token: str,
    ) -> Page:
        fingerprint = query_fingerprint("downloads", user_id, sorted(statuses), product_id)
        cursor = decode_page_token(page_token, fingerprint)
        async with self._uow() as uow:
            rows, next_cursor, total = await SessionRepository(uow.session).page(
                user_id, statuses=statuses, product_id=product_id, cursor=cursor, page_size=page_size
            )
        live = await self.live.get_many(user_id, (r.id for r in rows if r.status == rules.DOWNLOADING))
        items = [SessionView.of(row, live.get(row.id)) for row in rows]
        return Page(items, encode_page_token(next_cursor, fingerprint) if next_cursor else "", total)

    async def get(self, user_id: uuid.UUID, download_id: uuid.UUID) -> SessionView:
        async with self._uow() as uow:
            row = await SessionRepository(uow.session).get(user_id, download_id)
        if row is None:
            raise download_not_found()
        live = await self.live.get_many(user_id, [row.id]) if row.status == rules.DOWNLOADING else {}
        return SessionView.of(row, live.get(row.id))

    # ------------------------------------------------------------------ writes
    async def start(self, user_id: uuid.UUID, request: StartRequest) -> SessionView:
        key = request_key(user_id, "StartDownload", request.request_id)
        async with self._uow() as uow:
            if (first := await replay.claim(uow, key, SessionView)) is not None:
                return first
            await require_owned(uow.session, user_id, request.product_id)
            settings = await get_download_settings(uow.session, user_id)
            version = await catalog.resolve_version(
                uow.session,
                request.product_id,
                branch=settings.branch_for(request.product_id),
                version_id=request.version_id,
            )
            if request.installed_version_id is not None:
                await _require_version_of(uow, request.product_id, request.installed_version_id)
            download_id = uuid.uuid4()
            plan = await catalog.transfer_plan(
                uow.session,
                version.version_id,
                installed_version_id=request.installed_version_id,
                installed_files=request.installed_files or None,
                download_id=download_id,
            )
            now = self._clock()
            repo = SessionRepository(uow.session)
            await repo.lock_user_queue(user_id)
            row = DownloadSession(
                id=download_id,
                user_id=user_id,
                product_id=request.product_id,
                version_id=version.version_id,
                installed_version_id=request.installed_version_id,
                branch=version.branch,
                status=rules.QUEUED,
                priority=request.priority,
                start_now=request.start_now,
                installation_path=request.installation_path,
                device_id=request.device_id,
                total_size_bytes=plan.bytes_to_download,
                downloaded_bytes=0,
                error_message="",
                created_at=now,
                updated_at=now,
            )
            repo.add(row)
            await repo.flush()
            changes = _Changes()
            changes.touch(row, None)
            await self._settle(uow, repo, user_id, changes, now, settings)
            view = SessionView.of(row)
            await replay.remember(uow, key, view)
            await self._commit(uow, changes)
        return view

    async def pause(
        self, user_id: uuid.UUID, download_id: uuid.UUID, request_id: uuid.UUID | None
    ) -> SessionView:
        return await self._act(user_id, download_id, rules.Action.PAUSE, "PauseDownload", request_id)

    async def resume(
        self, user_id: uuid.UUID, download_id: uuid.UUID, request_id: uuid.UUID | None
    ) -> SessionView:
        return await self._act(user_id, download_id, rules.Action.RESUME, "ResumeDownload", request_id)

    async def cancel(
        self, user_id: uuid.UUID, download_id: uuid.UUID, request_id: uuid.UUID | None
    ) -> SessionView:
        return await self._act(user_id, download_id, rules.Action.CANCEL, "CancelDownload", request_id)

    async def reprioritize(
        self, user_id: uuid.UUID, download_id: uuid.UUID, priority: int, request_id: uuid.UUID | None
    ) -> SessionView:
        return await self._act(
            user_id,
            download_id,
            rules.Action.REPRIORITIZE,
            "ReprioritizeDownload",
            request_id,
            priority=priority,
        )

    async def _act(
        self,
        user_id: uuid.UUID,
        download_id: uuid.UUID,
        action: rules.Action,
        method: str,
        request_id: uuid.UUID | None,
        *,
        priority: int | None = None,
    ) -> SessionView:
        key = request_key(user_id, method, request_id)
        async with self._uow() as uow:
            if (first := await replay.claim(uow, key, SessionView)) is not None:
                return first
            repo = SessionRepository(uow.session)
            await repo.lock_user_queue(user_id)
            row = await repo.get(user_id, download_id)
            if row is None:
                raise download_not_found()
            now = self._clock()
            changes = _Changes()
            new_status = rules.transition(row.status, action)
            if priority is not None:
                row.priority = priority
                row.updated_at = now
            if new_status != row.status:
                await self._move(row, new_status, now, changes)
                if action is rules.Action.RESUME:
                    row.error_message = ""
            await self._settle(uow, repo, user_id, changes, now)
            live = await self.live.get_many(user_id, [row.id]) if row.status == rules.DOWNLOADING else {}
            view = SessionView.of(row, live.get(row.id))
            await replay.remember(uow, key, view)
            await self._commit(uow, changes)
        return view

    async def report(
        self, user_id: uuid.UUID, download_id: uuid.UUID, report: ProgressReport
    ) -> ProgressView:
        """COMPLETED / FAILED finish the session in Postgres; files reported complete or failed write their
        events to the outbox (once per file and outcome); the rest is a plain report (`report_bytes`).
        Counted against the user's rate limit first (RateLimited: nothing done)."""
        if report.status == rules.DOWNLOADING and not report.files:
            return await self.report_bytes(str(user_id), str(download_id), report.downloaded_bytes)
        if self._limiter is not None:
            await self._limiter.admit(REPORT_METHOD, str(user_id))
        if report.status in (rules.COMPLETED, rules.FAILED):
            return await self._finish(user_id, download_id, report)
        if report.files:
            await self._file_events(user_id, download_id, report.files)
        return await self.report_bytes(
            str(user_id), str(download_id), report.downloaded_bytes, already_counted=True
        )

    async def report_bytes(
        self, user_id: str, download_id: str, downloaded_bytes: int, *, already_counted: bool = False
    ) -> ProgressView:
        """A plain report of a DOWNLOADING session, ids as canonical text (what Redis holds): one Redis
        script call, which also counts it against the user's rate limit (unless `already_counted`); the
        row is read only when the live state is gone."""
        now_ms = rules.epoch_ms(self._clock())
        outcome = await self.live.report(
            user_id, download_id, now_ms, downloaded_bytes, counted=not already_counted
        )
        if outcome.code is ReportCode.NO_LIVE_STATE:
            row = await self._seed(uuid.UUID(user_id), uuid.UUID(download_id))
            if row.status in rules.TERMINAL:
                return ProgressView(row.status, SessionView.of(row).progress_percentage, 0, None)
            outcome = await self.live.report(user_id, download_id, now_ms, downloaded_bytes, counted=False)
        if outcome.code is ReportCode.NO_LIVE_STATE:  # seeded and gone again: a change came in between
            raise download_not_found()
        if outcome.code is ReportCode.BEYOND_TOTAL:
            raise _beyond_total(outcome.total)
        live = outcome.status == rules.DOWNLOADING
        return ProgressView(
            outcome.status,
            rules.progress_percentage(outcome.downloaded, outcome.total),
            int(outcome.speed) if live else 0,
            rules.eta_seconds(outcome.downloaded, outcome.total, outcome.speed) if live else None,
        )

    async def _seed(self, user_id: uuid.UUID, download_id: uuid.UUID) -> DownloadSession:
        """Re-reads a session whose live state is gone; FOR SHARE waits for a change in flight to commit."""
        async with self._uow() as uow:
            row = await uow.session.scalar(
                select(DownloadSession)
                .where(DownloadSession.id == download_id, DownloadSession.user_id == user_id)
                .with_for_update(read=True)
            )
            if row is None:
                raise download_not_found()
            if row.status not in rules.TERMINAL:
                await self.live.put(_mirror(row))
        return row

    async def _finish(
        self, user_id: uuid.UUID, download_id: uuid.UUID, report: ProgressReport
    ) -> ProgressView:
        action = rules.Action.COMPLETE if report.status == rules.COMPLETED else rules.Action.FAIL
        async with self._uow() as uow:
            repo = SessionRepository(uow.session)
            await repo.lock_user_queue(user_id)
            row = await repo.get(user_id, download_id)
            if row is None:
                raise download_not_found()
            if report.downloaded_bytes > row.total_size_bytes:
                raise _beyond_total(row.total_size_bytes)
            if row.status == report.status:  # a retried final report: it happened already
                return ProgressView(row.status, SessionView.of(row).progress_percentage, 0, None)
            new_status = rules.transition(row.status, action)
            now = self._clock()
            changes = _Changes()
            entries = await self._file_events_in(uow, row, report.files, now) if report.files else []
            if action is rules.Action.COMPLETE:
                row.downloaded_bytes = row.total_size_bytes
                row.completed_at = now
                await library.mark_installed_in(uow, user_id, row.product_id, row.version_id)
            else:
                row.downloaded_bytes = report.downloaded_bytes
                row.error_message = report.error_message
            repo.add(
                UpdateHistory(
                    id=uuid.uuid4(),
                    user_id=user_id,
                    product_id=row.product_id,
                    applied_version_id=row.version_id,
                    previous_version_id=row.installed_version_id,
                    download_session_id=row.id,
                    status="success" if action is rules.Action.COMPLETE else "failed",
                    error_message=report.error_message or None,
                    applied_at=now,
                )
            )
            await self._move(row, new_status, now, changes, fold_live=False)
            await self._settle(uow, repo, user_id, changes, now)
            view = ProgressView(row.status, SessionView.of(row).progress_percentage, 0, None)
            await self._commit(uow, changes)
        if row.status not in rules.TERMINAL:
            await self.live.mark_files(user_id, download_id, entries)
        return view

    async def _file_events(self, user_id: uuid.UUID, download_id: uuid.UUID, files: list[FileReport]) -> None:
        async with self._uow() as uow:
            row = await SessionRepository(uow.session).get(user_id, download_id)
            if row is None:
                raise download_not_found()
            if row.status != rules.DOWNLOADING:
                return  # the session moved on (paused, cancelled elsewhere): its files are not news
            entries = await self._file_events_in(uow, row, files, self._clock())
            await uow.commit()
        await self.live.mark_files(user_id, download_id, entries)

    async def _file_events_in(
        self, uow: UnitOfWork, row: DownloadSession, files: list[FileReport], now: datetime
    ) -> list[str]:
        """`download.item.status.changed` for each file reported complete or failed for the first time;
        returns the entries to mark as reported once committed. A path outside the version is refused."""
        known = await SessionRepository(uow.session).version_files(row.version_id, {f.path for f in files})
        unknown = [
            FieldViolation(f"files[{i}].path", "is not a file of the download's version")
            for i, f in enumerate(files)
            if f.path not in known
        ]
        if unknown:
            raise InvalidArgument(unknown)
        reports = {f"{'completed' if f.completed else 'failed'}:{f.path}": f for f in files}
        fresh = await self.live.unseen_files(row.user_id, row.id, list(reports))
        for entry in fresh:
            report = reports[entry]
            file = known[report.path]
            payload = rules.item_status_changed_payload(
                download_id=row.id,
                path=report.path,
                file_id=file.file_id,
                size_bytes=file.size_bytes,
                completed=report.completed,
                when=rfc3339(now),
                error_message=report.error_message,
            )
            uow.add_event(rules.ITEM_STATUS_CHANGED, row.user_id, payload, topic=DOWNLOAD_EVENTS_TOPIC)
        return fresh

    async def cancel_product_in(self, uow: UnitOfWork, user_id: uuid.UUID, product_id: uuid.UUID) -> int:
        """Cancels the user's active sessions of a product (its entitlement was revoked) inside the caller's
        unit of work, promoting what waits behind them. Live state is only dropped (the caller commits;
        the next report re-reads the rows). Returns how many were cancelled."""
        repo = SessionRepository(uow.session)
        await repo.lock_user_queue(user_id)
        now = self._clock()
        changes = _Changes()
        rows = await repo.active_of_product(user_id, product_id)
        for row in rows:
            row.error_message = "the product is no longer in the library"
            await self._move(row, rules.CANCELLED, now, changes)
        if rows:
            await self._settle(uow, repo, user_id, changes, now)
            await self._emit(uow, changes)
            await self.live.forget(changes.mirrors())
        return len(rows)

    async def promote_waiting(self, *, batch: int = 500) -> int:
        """Re-runs the queue of every user with waiting sessions (a schedule window opened, a concurrency
        limit was raised), one transaction per user. Returns how many sessions started."""
        started, after = 0, None
        while True:
            async with self._uow() as uow:
                users = await SessionRepository(uow.session).users_waiting(after, batch)
            for user_id in users:
                started += await self.promote_user(user_id)
            if len(users) < batch:
                return started
            after = users[-1]

    async def promote_user(self, user_id: uuid.UUID) -> int:
        """Re-runs one user's queue now (their download settings changed); how many sessions started."""
        async with self._uow() as uow:
            repo = SessionRepository(uow.session)
            await repo.lock_user_queue(user_id)
            changes = _Changes()
            await self._settle(uow, repo, user_id, changes, self._clock())
            await self._commit(uow, changes)
        return len(changes.rows)

    # ------------------------------------------------------------------ the queue
    async def _move(
        self, row: DownloadSession, status: str, now: datetime, changes: _Changes, *, fold_live: bool = True
    ) -> None:
        """One status change; leaving DOWNLOADING folds the live bytes into the row first."""
        if fold_live and row.status == rules.DOWNLOADING:
            live = (await self.live.get_many(row.user_id, [row.id])).get(row.id)
            if live is not None:
                row.downloaded_bytes = min(live.downloaded, row.total_size_bytes)
        changes.touch(row, row.status)
        row.status = status
        row.updated_at = now

    async def _settle(
        self,
        uow: UnitOfWork,
        repo: SessionRepository,
        user_id: uuid.UUID,
        changes: _Changes,
        now: datetime,
        settings=None,
    ) -> None:
        """Promotes waiting sessions into free slots, in this transaction (the queue lock is held)."""
        await repo.flush()
        if settings is None:
            settings = await get_download_settings(uow.session, user_id)
        active = await repo.active(user_id)
        entries = [rules.QueueEntry(r.id, r.status, r.priority, r.created_at, r.start_now) for r in active]
        promote = set(
            rules.to_promote(
                entries,
                max_concurrent=settings.max_concurrent_downloads,
                in_window=in_schedule_window(settings, now),
            )
        )
        for row in active:
            if row.id in promote:
                await self._move(row, rules.DOWNLOADING, now, changes)
        await repo.flush()

    async def _emit(self, uow: UnitOfWork, changes: _Changes) -> None:
        for download_id, row in changes.rows.items():
            previous = changes.before[download_id]
            if previous == row.status:
                continue
            payload = rules.status_changed_payload(
                download_id=row.id,
                user_id=row.user_id,
                product_id=row.product_id,
                version_id=row.version_id,
                new_status=row.status,
                previous_status=previous,
                downloaded_bytes=row.downloaded_bytes,
                total_size_bytes=row.total_size_bytes,
                when=rfc3339(row.updated_at),
                error_message=row.error_message,
            )
            uow.add_event(rules.SESSION_STATUS_CHANGED, row.user_id, payload, topic=DOWNLOAD_EVENTS_TOPIC)
            uow.notify(row.user_id, rules.STATUS_CHANGED_NOTIFICATION, payload)

    async def _commit(self, uow: UnitOfWork, changes: _Changes) -> None:
        """Commits with the new live state written while the queue lock is still held, so two changes of
        one user reach Redis in the order they commit; a failed commit drops it again."""
        await self._emit(uow, changes)
        mirrors = changes.mirrors()
        await self.live.put(*mirrors)
        try:
            await uow.commit()
        except BaseException:
            await self.live.forget(mirrors)
            raise


async def _require_version_of(uow: UnitOfWork, product_id: uuid.UUID, version_id: uuid.UUID) -> None:
    """The installed version a client names must be one of the product's (it becomes the update history's
    previous version)."""
    try:
        await catalog.resolve_version(uow.session, product_id, branch=None, version_id=version_id)
    except NotFound as exc:
        raise InvalidArgument(
            [FieldViolation("installed_version_id", "is not a published version of the product")]
        ) from exc


def _beyond_total(total: int) -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation("downloaded_bytes", f"must not exceed the total of {total} bytes")]
    )


async def run_promoter(sessions: DownloadSessions, every_seconds: float) -> None:
    """The worker behind DownloadSessions.promote_waiting."""
    while True:
        try:
            await sessions.promote_waiting()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("download queue promotion failed; will retry", exc_info=True)
        await asyncio.sleep(every_seconds)
