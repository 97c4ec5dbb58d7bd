"""Install, update, verify / repair and uninstall a product on this device (what the launcher runs).

An install or update:
  1. resolves the target version (ListProductVersions: the branch's latest, or `--version`), checks free
     disk space against what it will write (nothing is started when it does not fit);
  2. starts a session (or continues the one its journal names), waits while it is queued or paused;
  3. reads every manifest page, plans (plan.py): chunks held by installed files are copied locally, the
     rest fetched; a journal from an interrupted run is re-verified against the staged bytes;
  4. copies local chunks, then fetches the rest in parallel (Gate: the user's concurrency) under the
     bandwidth cap (Throttle), each verified before it is written at its offsets in the staging area;
  5. moves each file into place (os.replace) once whole and its SHA-256 verified, removes the files the
     version dropped, reports completion, and records the new version.
A report goes to the server about once a second; its reply and the download WebSocket carry pauses,
cancellations and settings changes made elsewhere, which apply to the running download at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

import grpc
import httpx

from client.engine import local
from client.engine.fetch import Counters, Fetcher, Link, Links
from client.engine.journal import Journal, JournalState
from client.engine.plan import Assembly, Chunk, ChunkJob, FileSpec, Plan, build_plan
from client.engine.record import META_DIR, InstallRecord, Installs, default_directory
from client.engine.throttle import Gate, Throttle, bytes_per_second
from client.sdk.connection import Connection
from client.sdk.downloads import (
    SETTINGS_UPDATED,
    STATUS_CHANGED,
    DownloadsClient,
    DownloadSocket,
    Status,
    status_name,
    websocket_url,
)
from client.sizes import human_size
from download.v1 import download_service_pb2 as pb

CONNECTIONS_PER_DOWNLOAD = 4  # chunk GETs in parallel per download slot of the user's settings
MAX_CONNECTIONS = 32
LOCAL_COPIES = 4
REPORT_INTERVAL = 1.0
DEFAULT_BRANCH = "public"


class EngineError(Exception):
    """The install cannot go on; the message says why and what to do."""


class NotEnoughSpace(EngineError):
    pass


class DownloadCancelled(EngineError):
    pass


class NotInstalled(EngineError):
    pass


class DownloadFailed(EngineError):
    pass


@dataclass
class Outcome:
    """What an install, update or repair did."""

    product_id: str
    directory: Path
    version_id: str
    version_name: str
    previous_version_id: str = ""
    download_id: str = ""
    up_to_date: bool = False
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    seconds: float = 0.0  # the whole command: version lookup, session, manifest, data, completion
    transfer_seconds: float = 0.0  # the data alone: first chunk copied or requested to last file in place


@dataclass
class Verification:
    product_id: str
    directory: Path
    version_id: str
    checked: int
    damaged: list[tuple[str, str]]  # (path, problem)
    repair_bytes: int
    repaired: list[str] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)


def connections_for(max_concurrent_downloads: int) -> int:
    return min(MAX_CONNECTIONS, max(1, max_concurrent_downloads) * CONNECTIONS_PER_DOWNLOAD)


def free_bytes(directory: Path) -> int:
    """Free space of the file system `directory` is (or will be) on."""
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _spec(entry: pb.ManifestFile) -> FileSpec:
    return FileSpec(
        entry.path,
        entry.size_bytes,
        entry.sha256,
        tuple(Chunk(c.chunk_hash, c.offset, c.size_bytes, c.compressed_size_bytes) for c in entry.chunks),
    )


def _links_of(page: pb.GetDownloadManifestResponse, token: str) -> dict[str, Link]:
    return {
        c.chunk_hash: Link(c.url, c.url_expires_at.ToDatetime().replace(tzinfo=UTC), token)
        for f in page.files
        for c in f.chunks
    }


def _write_places(staging: Path, job: ChunkJob, data: bytes) -> None:
    for path, offset in job.destinations:
        fd = os.open(staging / path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)


def _prune_empty_dirs(root: Path, paths: list[str]) -> None:
    for path in paths:
        parent = (root / path).parent
        while parent != root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


class Engine:
    """One launcher's downloads over a connection. Use `async with engine.listening():` around commands so
    settings and status changes arrive over the WebSocket; without it they arrive with the next report."""

    def __init__(
        self,
        conn: Connection,
        token: str,
        *,
        installs: Installs | None = None,
        reserve_bytes: int | None = None,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        self.downloads = DownloadsClient(conn)
        self._token = token
        self._target = conn.target
        self.installs = installs or Installs()
        self.reserve_bytes = (
            reserve_bytes
            if reserve_bytes is not None
            else int(os.environ.get("LAUNCHER_DISK_RESERVE_BYTES", "0"))
        )
        self.throttle = Throttle()
        self.gate = Gate(connections_for(1))
        self.counters = Counters()
        self.on_status = on_status or (lambda _text: None)
        self.socket: DownloadSocket | None = None
        # The running download: its id, status and totals (what the CLI's progress bar shows).
        self.download_id = ""
        self.status = ""
        self.total_bytes = 0  # compressed bytes this run must fetch or copy
        self.done_bytes = 0
        self._status_changed = asyncio.Event()
        self.limit_changes: list[tuple[float, float]] = []  # (monotonic time, bytes/s) as applied

    # ---------------------------------------------------------------- settings and status, from anywhere
    @contextlib.asynccontextmanager
    async def listening(self):
        async with DownloadSocket(websocket_url(self._target), self._token, self._on_notification) as socket:
            self.socket = socket
            try:
                yield socket
            finally:
                self.socket = None

    async def _on_notification(self, kind: str, payload: dict) -> None:
        if kind == SETTINGS_UPDATED:
            await self.apply_settings(
                int(payload.get("bandwidthLimitKbps") or 0), int(payload.get("maxConcurrentDownloads") or 1)
            )
        elif kind == STATUS_CHANGED and payload.get("downloadSessionId") == self.download_id:
            await self.observe_status(str(payload.get("newStatus", "")))

    async def apply_settings(self, bandwidth_kbps: int, max_concurrent_downloads: int) -> None:
        rate = bytes_per_second(bandwidth_kbps)
        if rate != self.throttle.bucket.rate or not self.limit_changes:
            self.throttle.set_rate(rate)
            self.limit_changes.append((time.monotonic(), rate))
        await self.gate.set_limit(connections_for(max_concurrent_downloads))

    async def observe_status(self, status: str) -> None:
        if status == self.status:
            return
        self.status = status
        await self.gate.set_open(status == "downloading")
        self.on_status(status)
        self._status_changed.set()
        self._status_changed = asyncio.Event()

    async def _load_settings(self) -> pb.DownloadSettings:
        settings = await self.downloads.settings()
        await self.apply_settings(settings.bandwidth_limit_kbps, settings.max_concurrent_downloads)
        return settings

    # ---------------------------------------------------------------- choosing what to install
    async def _target_version(
        self, product_id: str, *, version: str, branch: str, record: InstallRecord | None
    ) -> pb.ProductVersion:
        settings = await self._load_settings()
        chosen = {b.product_id: b.branch for b in settings.product_branches}.get(product_id)
        branch = branch or chosen or (record.branch if record else "") or DEFAULT_BRANCH
        if version:
            found = [
                v
                for v in await self.downloads.versions(product_id)
                if version in (v.version_name, v.version_id)
            ]
            if not found:
                raise EngineError(f"the product has no published version {version!r} (see its versions list)")
            return next((v for v in found if v.branch == branch), found[0])
        latest = [v for v in await self.downloads.versions(product_id, branch=branch) if v.is_latest]
        if not latest:
            raise EngineError(f"the product has no published version on branch {branch!r}")
        return latest[0]

    async def _check_space(
        self, directory: Path, target: pb.ProductVersion, record: InstallRecord | None
    ) -> None:
        """Nothing is started unless what the install writes fits beside the configured reserve: a fresh
        install writes the whole version; an update to its branch's latest what CheckUpdates says changes."""
        needed = target.total_size_bytes
        if record is not None and target.is_latest and target.branch == record.branch:
            updates = await self.downloads.check_updates({record.product_id: record.version_id})
            needed = next(
                (u.bytes_to_write for u in updates if u.latest_version_id == target.version_id), needed
            )
        free = free_bytes(directory)
        if free - self.reserve_bytes < needed:
            raise NotEnoughSpace(
                f"not enough disk space in {directory}: the install writes {human_size(needed)}, "
                f"{human_size(max(0, free - self.reserve_bytes))} are free"
                + (f" beyond the reserve of {human_size(self.reserve_bytes)}" if self.reserve_bytes else "")
                + "; free some space or choose another --dir"
            )

    # ---------------------------------------------------------------- install / update
    async def install(
        self, product_id: str, *, directory: Path | None = None, version: str = "", branch: str = ""
    ) -> Outcome:
        started = time.monotonic()
        directory = (
            directory or self.installs.directory(product_id) or default_directory(product_id)
        ).resolve()
        record = InstallRecord.load(directory)
        if record is not None and record.product_id != product_id:
            raise EngineError(
                f"{directory} holds another product ({record.product_id}); choose another --dir"
            )
        target = await self._target_version(product_id, version=version, branch=branch, record=record)
        journal = Journal(directory / META_DIR / "journal")
        state = journal.read()
        if state is not None and state.version_id != target.version_id:
            state = None  # an interrupted install of another version: its staged bytes are of no use
        outcome = Outcome(
            product_id, directory, target.version_id, target.version_name, counters=self.counters
        )
        outcome.previous_version_id = record.version_id if record else ""
        if record is not None and record.version_id == target.version_id and state is None:
            outcome.up_to_date = True
            self.installs.put(product_id, directory)
            return outcome
        if state is None:
            await self._check_space(directory, target, record)
        staging = directory / META_DIR / "staging"
        self.status, self.download_id, self.total_bytes, self.done_bytes = "", "", 0, 0
        session = await self._session(product_id, directory, target, record, state)
        if state is None:
            shutil.rmtree(staging, ignore_errors=True)
        journal.start(target.version_id, session.download_id, keep=state)
        self.download_id = outcome.download_id = session.download_id
        self.installs.put(product_id, directory)
        try:
            await self.observe_status(status_name(session.status))
            await self._wait_until_downloading()
            files, changing, links = await self._manifest(session.download_id)
            plan = build_plan(files, changing if record else None, record.files if record else None, state)
            await self._run(directory, staging, journal, state, plan, links, session, outcome)
        except DownloadCancelled:
            journal.remove()
            shutil.rmtree(staging, ignore_errors=True)
            raise
        except DownloadFailed as exc:
            with contextlib.suppress(grpc.aio.AioRpcError):  # the staged chunks stay: a rerun resumes
                await self.downloads.fail(session.download_id, 0, str(exc))
            raise
        finally:
            journal.close()
        InstallRecord(product_id, target.version_id, target.version_name, target.branch, tuple(files)).save(
            directory
        )
        journal.remove()
        shutil.rmtree(staging, ignore_errors=True)
        outcome.seconds = time.monotonic() - started
        return outcome

    async def _session(
        self,
        product_id: str,
        directory: Path,
        target: pb.ProductVersion,
        record: InstallRecord | None,
        state: JournalState | None,
    ) -> pb.DownloadSession:
        """The interrupted run's session when it can go on, else a new one."""
        if state is not None and state.download_id:
            try:
                session = await self.downloads.get(state.download_id)
            except grpc.aio.AioRpcError:  # gone, or not ours any more: start afresh
                session = None
            if session is not None and session.version_id == target.version_id:
                name = status_name(session.status)
                if name in ("paused", "failed"):
                    return await self.downloads.resume(session.download_id)
                if name in ("queued", "downloading"):
                    return session
        return await self.downloads.start(
            product_id,
            installation_path=str(directory),
            version_id=target.version_id,
            installed_version_id=record.version_id if record else "",
        )

    async def _wait_until_downloading(self) -> None:
        while self.status != "downloading":
            if self.status == "cancelled":
                raise DownloadCancelled("the download was cancelled")
            if self.status == "completed":
                return
            changed = self._status_changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 2.0)
            if not changed.is_set():  # no news over the socket: ask
                await self.observe_status(status_name((await self.downloads.get(self.download_id)).status))

    async def _manifest(self, download_id: str) -> tuple[list[FileSpec], set[str], Links]:
        async def renew(token: str) -> dict[str, Link]:
            return _links_of(await self.downloads.manifest_page(download_id, page_token=token), token)

        links, files, changing = Links(renew), [], set()
        async for token, page in self.downloads.manifest(download_id):
            files.extend(_spec(f) for f in page.files)
            changing.update(f.path for f in page.files if f.write_required)
            for chunk_id, link in _links_of(page, token).items():
                links.put(chunk_id, link)
        return files, changing, links

    async def _run(
        self,
        directory: Path,
        staging: Path,
        journal: Journal,
        state: JournalState | None,
        plan: Plan,
        links: Links,
        session: pb.DownloadSession,
        outcome: Outcome,
    ) -> None:
        specs = {f.path: f for f in plan.write}
        await asyncio.to_thread(self._prepare_staging, staging, plan)
        assembly = Assembly(plan.write)
        whole = assembly.whole_from_start()
        # Files a previous run verified but was killed before moving.
        for path in state.files if state else ():
            if (staging / path).exists():
                await asyncio.to_thread(self._move_into_place, staging, directory, path)
        resumed = await asyncio.to_thread(self._reverify, staging, plan)
        for job in resumed:
            whole += assembly.filled(job)
        self.counters.resumed_chunks += len(resumed)
        resumed_fetch = sum(j.compressed_size for j in resumed if j.local is None)
        self.total_bytes = sum(j.compressed_size for j in plan.jobs)
        reporter = _Reporter(self, session, resumed_fetch)
        report_task = asyncio.create_task(reporter.run(), name="progress-reports")
        try:
            async with self._http() as http:  # made first: a client loads the CA bundle (~0.1 s)
                transfer_started = time.monotonic()
                fetch_jobs = await self._copy_local(
                    directory, staging, journal, plan, assembly, reporter, whole
                )
                for path in whole:
                    await self._finish_file(staging, directory, journal, specs[path], reporter)
                fetcher = Fetcher(http, self.throttle, self.gate, links, self.counters)
                await self._fetch_all(
                    fetcher, staging, directory, journal, fetch_jobs, assembly, specs, reporter
                )
                outcome.transfer_seconds = time.monotonic() - transfer_started
        finally:
            report_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await report_task
        if self.status == "cancelled":
            raise DownloadCancelled("the download was cancelled")
        for path in plan.remove:
            (directory / path).unlink(missing_ok=True)
        _prune_empty_dirs(directory, plan.remove)
        outcome.written = sorted(specs)
        outcome.removed = plan.remove
        await reporter.final()

    def _http(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
        return httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0), limits=limits)

    @staticmethod
    def _prepare_staging(staging: Path, plan: Plan) -> None:
        for spec in plan.write:
            path = staging / spec.path
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as handle:
                if handle.tell() != spec.size:
                    handle.truncate(spec.size)

    @staticmethod
    def _reverify(staging: Path, plan: Plan) -> list[ChunkJob]:
        """The journaled chunks whose staged bytes still verify; the others go back to the jobs."""
        good = []
        for job in plan.journaled:
            if all(local.read_chunk(staging / p, o, job.size, job.chunk_id) for p, o in job.destinations):
                good.append(job)
            else:
                plan.jobs.append(job)
        plan.journaled = good
        return good

    async def _copy_local(
        self,
        directory: Path,
        staging: Path,
        journal: Journal,
        plan: Plan,
        assembly: Assembly,
        reporter: _Reporter,
        whole: list[str],
    ) -> list[ChunkJob]:
        """Copies every chunk an installed file holds (before any file is replaced); returns the jobs left
        to fetch (including those whose local copy no longer verifies)."""
        to_fetch = [j for j in plan.jobs if j.local is None]
        gate = asyncio.Semaphore(LOCAL_COPIES)

        async def copy(job: ChunkJob) -> None:
            async with gate:
                data = await asyncio.to_thread(
                    local.read_chunk, directory / job.local.path, job.local.offset, job.size, job.chunk_id
                )
                if data is None:
                    to_fetch.append(job)
                    return
                await asyncio.to_thread(_write_places, staging, job, data)
            journal.chunk_done(job.chunk_id)
            self.counters.copied_chunks += 1
            self.counters.copied_bytes += job.size
            self.done_bytes += job.compressed_size
            reporter.chunks.append(job.chunk_id)
            whole.extend(assembly.filled(job))

        await asyncio.gather(*(copy(j) for j in plan.jobs if j.local is not None))
        return to_fetch

    async def _fetch_all(
        self,
        fetcher: Fetcher,
        staging: Path,
        directory: Path,
        journal: Journal,
        jobs: list[ChunkJob],
        assembly: Assembly,
        specs: dict[str, FileSpec],
        reporter: _Reporter,
    ) -> None:
        pending = list(reversed(jobs))

        async def worker() -> None:
            while pending:
                job = pending.pop()
                await fetcher.fetch(job, functools.partial(_write_places, staging, job))
                journal.chunk_done(job.chunk_id)
                self.done_bytes += job.compressed_size
                reporter.fetched += job.compressed_size
                reporter.chunks.append(job.chunk_id)
                for path in assembly.filled(job):
                    await self._finish_file(staging, directory, journal, specs[path], reporter)

        if not jobs:
            return
        workers = [asyncio.create_task(worker()) for _ in range(min(MAX_CONNECTIONS, len(jobs)))]
        everything = asyncio.gather(*workers)
        cancelled = asyncio.create_task(self._until_cancelled())
        try:
            await asyncio.wait([everything, cancelled], return_when=asyncio.FIRST_COMPLETED)
            if cancelled.done():
                raise DownloadCancelled("the download was cancelled")  # GETs in flight are abandoned
            if (failure := everything.exception()) is not None:
                raise DownloadFailed(f"{failure}; run the same command again to resume")
        finally:
            cancelled.cancel()
            for task in workers:
                task.cancel()
            await asyncio.gather(everything, cancelled, return_exceptions=True)

    async def _until_cancelled(self) -> None:
        while self.status != "cancelled":
            await self._status_changed.wait()

    async def _finish_file(
        self, staging: Path, directory: Path, journal: Journal, spec: FileSpec, reporter: _Reporter
    ) -> None:
        sha = await asyncio.to_thread(local.file_sha256, staging / spec.path)
        if sha != spec.sha256:
            raise DownloadFailed(f"{spec.path} did not verify after assembly; run the same command again")
        journal.file_done(spec.path)  # before the move: a restart finishes a move it finds staged
        await asyncio.to_thread(self._move_into_place, staging, directory, spec.path)
        reporter.files.append(spec.path)

    @staticmethod
    def _move_into_place(staging: Path, directory: Path, path: str) -> None:
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / path, target)

    async def update(
        self, product_ids: list[str] | None = None
    ) -> list[tuple[pb.ProductUpdate, Outcome | None]]:
        """CheckUpdates for the named (default: every) installed product, then installs each update."""
        installed = {}
        for product_id, directory in self.installs.all().items():
            if product_ids and product_id not in product_ids:
                continue
            record = InstallRecord.load(directory)
            if record is not None:
                installed[product_id] = record.version_id
        if missing := [p for p in product_ids or () if p not in installed]:
            raise NotInstalled(f"not installed on this device: {', '.join(missing)}")
        if not installed:
            return []
        results = []
        for update in await self.downloads.check_updates(installed):
            outcome = None
            if update.update_available:
                outcome = await self.install(update.product_id, version=update.latest_version_id)
                self.counters = Counters()
            results.append((update, outcome))
        return results

    # ---------------------------------------------------------------- verify / repair / uninstall
    def _installed(self, product_id: str) -> tuple[Path, InstallRecord]:
        directory = self.installs.directory(product_id)
        record = InstallRecord.load(directory) if directory else None
        if directory is None or record is None:
            raise NotInstalled(f"{product_id} is not installed on this device (install it first)")
        return directory, record

    async def verify(self, product_id: str, *, repair: bool = False) -> Verification:
        directory, record = self._installed(product_id)
        examined = await asyncio.to_thread(lambda: [local.examine(directory, s) for s in record.files])
        result = await self.downloads.verify(product_id, record.version_id, [f for f in examined if f])
        outcome = Verification(
            product_id,
            directory,
            record.version_id,
            result.checked_files_count,
            [(d.path, pb.DamagedFile.Problem.Name(d.problem).lower()) for d in result.damaged_files],
            result.repair_size_bytes,
            counters=self.counters,
        )
        if repair and result.damaged_files:
            await self._load_settings()
            await self._repair(directory, record, result, outcome)
        return outcome

    async def _repair(
        self, directory: Path, record: InstallRecord, result: pb.VerificationResult, outcome: Verification
    ) -> None:
        """Rewrites each damaged file: the chunks the server named are fetched, every other chunk is copied
        from the damaged copy (it verified), then the file is checked whole and moved into place."""
        specs = {f.path: f for f in record.files}
        staging = directory / META_DIR / "repair"
        links = Links()  # repair links are fresh: not renewed (a rerun of verify gets new ones)
        for damaged in result.damaged_files:
            for c in damaged.chunks:
                links.put(c.chunk_hash, Link(c.url, c.url_expires_at.ToDatetime().replace(tzinfo=UTC), None))
        await self.gate.set_open(True)
        try:
            async with self._http() as http:
                fetcher = Fetcher(http, self.throttle, self.gate, links, self.counters)
                for damaged in result.damaged_files:
                    spec = specs[damaged.path]
                    await self._repair_file(
                        fetcher, directory, staging, spec, {c.chunk_hash for c in damaged.chunks}
                    )
                    outcome.repaired.append(spec.path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    async def _repair_file(
        self, fetcher: Fetcher, directory: Path, staging: Path, spec: FileSpec, refetch: set[str]
    ) -> None:
        await asyncio.to_thread(self._prepare_staging, staging, Plan([spec], [], [], []))

        async def place(job: ChunkJob) -> None:
            write = functools.partial(_write_places, staging, job)
            if job.chunk_id in refetch:
                await fetcher.fetch(job, write)
                return
            data = await asyncio.to_thread(
                local.read_chunk, directory / spec.path, job.destinations[0][1], job.size, job.chunk_id
            )
            if data is None:
                raise DownloadFailed(f"{spec.path} changed while it was repaired; verify again")
            self.counters.copied_chunks += 1
            self.counters.copied_bytes += job.size
            await asyncio.to_thread(write, data)

        await asyncio.gather(*(place(j) for j in build_plan([spec], None, None).jobs))
        if await asyncio.to_thread(local.file_sha256, staging / spec.path) != spec.sha256:
            raise DownloadFailed(f"{spec.path} did not verify after repair; verify again")
        await asyncio.to_thread(self._move_into_place, staging, directory, spec.path)

    def uninstall(self, product_id: str) -> tuple[Path, int]:
        """Deletes the installed files (only those of the version, plus the launcher's own directory);
        returns the directory and the number of files removed."""
        directory, record = self._installed(product_id)
        removed = 0
        for spec in record.files:
            with contextlib.suppress(FileNotFoundError):
                (directory / spec.path).unlink()
                removed += 1
        shutil.rmtree(directory / META_DIR, ignore_errors=True)
        _prune_empty_dirs(directory, [f.path for f in record.files])
        with contextlib.suppress(OSError):
            directory.rmdir()  # only when empty: files the player added stay
        self.installs.drop(product_id)
        return directory, removed


class _Reporter:
    """Reports progress about once a second and acts on the status each reply carries."""

    def __init__(self, engine: Engine, session: pb.DownloadSession, already: int) -> None:
        self._engine = engine
        self._id = session.download_id
        self._total = session.total_size_bytes
        self.fetched = already  # compressed bytes of the session's chunks fetched so far (all runs)
        self.chunks: list[str] = []
        self.files: list[str] = []

    @property
    def downloaded(self) -> int:
        return min(self._total, self.fetched)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            with contextlib.suppress(Exception):  # offline for a moment: the next report catches up
                await self.report()

    async def report(self) -> None:
        chunks, files = self.chunks[:10000], self.files[:1000]
        reply = await self._engine.downloads.report_progress(
            self._id, self.downloaded, completed_chunks=chunks, completed_files=files
        )
        del self.chunks[: len(chunks)], self.files[: len(files)]
        await self._engine.observe_status(status_name(reply.status))

    async def final(self) -> None:
        reply = await self._engine.downloads.complete(self._id, self.downloaded, completed_files=self.files)
        if reply.status != Status.COMPLETED:
            raise EngineError(
                f"the server did not accept the completion (status {status_name(reply.status)})"
            )
        self.files.clear()
