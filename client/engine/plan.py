"""What an install or update must do (pure): which files to assemble, which chunks to fetch and which to copy
from files already on disk, where each chunk goes, and which installed files the new version dropped.

    plan = build_plan(target_files, write_required, installed_files, journal_state)
    plan.jobs         chunks still to place: each with every (file, offset) it fills and, when an installed
                      file holds it, where to copy it from instead of downloading it
    plan.journaled    chunks a previous run already placed (re-verified before they are trusted)
    plan.write        the files to assemble in the staging area; plan.remove the files to delete at the end
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from client.engine.journal import JournalState


@dataclass(frozen=True, slots=True)
class Chunk:
    chunk_id: str
    offset: int
    size: int
    compressed_size: int


@dataclass(frozen=True, slots=True)
class FileSpec:
    """A file of a version: its path, size, SHA-256 and chunk list (in offset order, covering it)."""

    path: str
    size: int
    sha256: str
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True, slots=True)
class Source:
    """Where a chunk's bytes already are on disk: an installed file at an offset."""

    path: str
    offset: int


@dataclass
class ChunkJob:
    chunk_id: str
    size: int
    compressed_size: int
    destinations: list[tuple[str, int]] = field(default_factory=list)  # (file path, offset) in the version
    local: Source | None = None


@dataclass
class Plan:
    write: list[FileSpec]
    jobs: list[ChunkJob]
    journaled: list[ChunkJob]
    remove: list[str]

    @property
    def fetch_jobs(self) -> list[ChunkJob]:
        return [j for j in self.jobs if j.local is None]

    @property
    def fetch_bytes(self) -> int:
        """Compressed bytes to download if every local copy checks out."""
        return sum(j.compressed_size for j in self.fetch_jobs)

    @property
    def write_bytes(self) -> int:
        """Bytes the staging area needs: every file to write, whole."""
        return sum(f.size for f in self.write)


def build_plan(
    target: Sequence[FileSpec],
    write_required: Iterable[str] | None,
    installed: Sequence[FileSpec] | None,
    journal: JournalState | None = None,
) -> Plan:
    """`write_required`: the paths the server says change (None: all). `installed`: the files of the
    installed version as its record lists them (None: nothing installed). `journal`: what an interrupted
    run of the same install already did."""
    placed = journal.files if journal else set()
    done = journal.chunks if journal else set()
    changing = set(write_required) if write_required is not None else None
    installed = list(installed or ())
    had = {f.path for f in installed}
    write = [
        f
        for f in target
        if f.path not in placed and (changing is None or f.path in changing or f.path not in had)
    ]
    sources = _sources(installed, [f for f in target if f.path in placed])
    jobs: dict[str, ChunkJob] = {}
    for spec in write:
        for chunk in spec.chunks:
            job = jobs.get(chunk.chunk_id)
            if job is None:
                job = jobs[chunk.chunk_id] = ChunkJob(
                    chunk.chunk_id, chunk.size, chunk.compressed_size, local=sources.get(chunk.chunk_id)
                )
            job.destinations.append((spec.path, chunk.offset))
    target_paths = {f.path for f in target}
    return Plan(
        write=write,
        jobs=[j for c, j in jobs.items() if c not in done],
        journaled=[j for c, j in jobs.items() if c in done],
        remove=sorted(p for p in had if p not in target_paths),
    )


def _sources(installed: Sequence[FileSpec], placed: Sequence[FileSpec]) -> dict[str, Source]:
    """Chunk id → a place on disk holding it: the installed files (those not yet replaced by the new
    version) and the new version's files already moved into place."""
    replaced = {f.path for f in placed}
    sources: dict[str, Source] = {}
    for spec in [*(f for f in installed if f.path not in replaced), *placed]:
        for chunk in spec.chunks:
            sources.setdefault(chunk.chunk_id, Source(spec.path, chunk.offset))
    return sources


class Assembly:
    """Counts, per file being assembled, the chunk places still unfilled; says when a file is whole."""

    def __init__(self, files: Sequence[FileSpec]) -> None:
        self._left = {f.path: len(f.chunks) for f in files}

    def whole_from_start(self) -> list[str]:
        """Files with nothing to fill (empty files)."""
        return [p for p, n in self._left.items() if n == 0]

    def filled(self, job: ChunkJob) -> list[str]:
        """Marks every place of `job` filled; returns the files that became whole by it."""
        whole = []
        for path, _ in job.destinations:
            self._left[path] -= 1
            if self._left[path] == 0:
                whole.append(path)
        return whole

    @property
    def remaining(self) -> int:
        return sum(1 for n in self._left.values() if n)
