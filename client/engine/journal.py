"""The local journal of a download in progress: which chunks are verified and written to the staging area,
and which files are verified and moved into place, so a restart after `kill -9` or a power cut fetches only
what it lacked.

Text, append-only, one record per line:
    launcher-journal 1 <version id> <download id>      the header: what is being installed, by which session
    C <chunk id>                                        the chunk was verified and written to all its places
    F <path as JSON>                                    the file was verified and moved into place
A record counts only once its line is complete (a torn last line is ignored), and an unknown line is skipped.
The journal is written after the data it vouches for, but not fsynced per record: after a power cut the
engine re-hashes the staged bytes of every journaled chunk before trusting it (engine.py), so a record that
outlived its data costs a re-fetch, never a wrong file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = "launcher-journal 1"
_CHUNK = re.compile(r"^C ([0-9a-f]{64})$")


@dataclass
class JournalState:
    version_id: str
    download_id: str
    chunks: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)


def header(version_id: str, download_id: str) -> str:
    return f"{MAGIC} {version_id} {download_id}\n"


def chunk_record(chunk_id: str) -> str:
    return f"C {chunk_id}\n"


def file_record(path: str) -> str:
    return f"F {json.dumps(path, ensure_ascii=False)}\n"


def parse(text: str) -> JournalState | None:
    """The state a journal's text records; None when it has no complete, well-formed header."""
    lines = text.split("\n")
    complete, _torn = lines[:-1], lines[-1]
    if not complete:
        return None
    head = complete[0].split(" ")
    if len(head) != 4 or " ".join(head[:2]) != MAGIC:
        return None
    state = JournalState(head[2], head[3])
    for line in complete[1:]:
        if match := _CHUNK.match(line):
            state.chunks.add(match.group(1))
        elif line.startswith("F "):
            try:
                path = json.loads(line[2:])
            except ValueError:
                continue
            if isinstance(path, str):
                state.files.add(path)
    return state


class Journal:
    """An open journal file: appends records, flushed to the OS at once (a killed process loses nothing
    it wrote; a power cut is covered by re-verification)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = None

    def read(self) -> JournalState | None:
        try:
            return parse(self.path.read_text(encoding="utf-8", errors="replace"))
        except FileNotFoundError:
            return None

    def start(self, version_id: str, download_id: str, keep: JournalState | None = None) -> None:
        """Begins the journal afresh for this version and session, carrying over `keep`'s records."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".new")
        lines = [header(version_id, download_id)]
        if keep is not None:
            lines += [chunk_record(c) for c in sorted(keep.chunks)] + [
                file_record(p) for p in sorted(keep.files)
            ]
        temporary.write_text("".join(lines), encoding="utf-8")
        os.replace(temporary, self.path)
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for appends)

    def _append(self, line: str) -> None:
        assert self._handle is not None, "start() the journal first"
        self._handle.write(line)
        self._handle.flush()

    def chunk_done(self, chunk_id: str) -> None:
        self._append(chunk_record(chunk_id))

    def file_done(self, path: str) -> None:
        self._append(file_record(path))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
