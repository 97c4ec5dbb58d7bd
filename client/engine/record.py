"""What is installed where, kept on this device.

Each installation directory holds `.launcher/` (never part of the game's files): `install.json`, the record
of the installed version (its id, name, branch and every file with its chunk list, so updates know which
chunks are already on disk and verification knows where chunks start), and during a download `journal`
and `staging/`. The device's list of installations is `installs.json` in the client's state directory
(`LIBRARY_STATE_DIR`, default ~/.local/state/library-client): product id → directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from client.engine.plan import Chunk, FileSpec

META_DIR = ".launcher"


def state_dir() -> Path:
    return Path(os.environ.get("LIBRARY_STATE_DIR") or Path.home() / ".local" / "state" / "library-client")


def default_directory(product_id: str) -> Path:
    """Where a product installs without `--dir`: `LAUNCHER_GAMES_DIR`/<product>, else <state dir>/games/…"""
    root = os.environ.get("LAUNCHER_GAMES_DIR")
    return (Path(root) if root else state_dir() / "games") / product_id


def write_json_atomically(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8"
    ) as f:
        json.dump(value, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


@dataclass(frozen=True)
class InstallRecord:
    product_id: str
    version_id: str
    version_name: str
    branch: str
    files: tuple[FileSpec, ...]

    @staticmethod
    def path_in(directory: Path) -> Path:
        return directory / META_DIR / "install.json"

    @classmethod
    def load(cls, directory: Path) -> InstallRecord | None:
        try:
            raw = json.loads(cls.path_in(directory).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return cls(
            raw["productId"],
            raw["versionId"],
            raw["versionName"],
            raw["branch"],
            tuple(
                FileSpec(f["path"], f["size"], f["sha256"], tuple(Chunk(*c) for c in f["chunks"]))
                for f in raw["files"]
            ),
        )

    def save(self, directory: Path) -> None:
        write_json_atomically(
            self.path_in(directory),
            {
                "productId": self.product_id,
                "versionId": self.version_id,
                "versionName": self.version_name,
                "branch": self.branch,
                "files": [
                    {
                        "path": f.path,
                        "size": f.size,
                        "sha256": f.sha256,
                        "chunks": [[c.chunk_id, c.offset, c.size, c.compressed_size] for c in f.chunks],
                    }
                    for f in self.files
                ],
            },
        )


class Installs:
    """The device's installations: product id → directory (`installs.json` in the state directory)."""

    def __init__(self, root: Path | None = None) -> None:
        self.path = (root or state_dir()) / "installs.json"

    def all(self) -> dict[str, Path]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return {product: Path(directory) for product, directory in raw.items()}

    def directory(self, product_id: str) -> Path | None:
        return self.all().get(product_id)

    def put(self, product_id: str, directory: Path) -> None:
        found = self.all()
        found[product_id] = directory.resolve()
        write_json_atomically(self.path, {p: str(d) for p, d in sorted(found.items())})

    def drop(self, product_id: str) -> None:
        found = self.all()
        if found.pop(product_id, None) is not None:
            write_json_atomically(self.path, {p: str(d) for p, d in sorted(found.items())})
