"""The launcher for tests: a product published in three versions with the `publish` code path, the
`python -m client` launcher run as a player runs it, and what an installation directory holds."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from client.__main__ import build_parser
from client.engine.record import META_DIR
from client.sdk.publishing import PublishReport
from scripts.devtokens import mint
from tests.support.processes import ROOT
from tests.support.publishing import publish_files

ENVOY_GRPC = f"127.0.0.1:{os.environ.get('ENVOY_PORT', '8080')}"
MiB = 1024 * 1024


def content(seed: int, size: int) -> bytes:
    """Deterministic incompressible bytes (the store deduplicates them across runs: publishing is quick)."""
    return random.Random(f"launcher-{seed}").randbytes(size)


@dataclass
class Product:
    product_id: uuid.UUID
    versions: dict[str, dict[str, bytes]]  # version name → files
    reports: dict[str, PublishReport]

    def version_id(self, name: str) -> str:
        return self.reports[name].version.version_id


def _versions() -> dict[str, dict[str, bytes]]:
    """1.0 and 2.0 on `public`, 3.0 on `beta`: an 8 MiB file edited in place, a duplicate file, an empty
    one, a file 2.0 drops and one it adds."""
    big = content(1, 8 * MiB)
    shared = content(2, 1536 * 1024)
    v1 = {
        "bin/big.dat": big,
        "data/a.pak": shared,
        "data/copy-of-a.pak": shared,
        "docs/readme.txt": b"Welcome to version 1.\n" * 100,
        "empty.cfg": b"",
        "old/dropped.txt": content(3, 300 * 1024),
    }
    big2 = big[: 4 * MiB] + content(4, 3 * 1024) + big[4 * MiB :]
    v2 = {k: v for k, v in v1.items() if k != "old/dropped.txt"} | {
        "bin/big.dat": big2,
        "docs/readme.txt": b"Welcome to version 2.\n" * 100,
        "data/new.pak": content(5, 700 * 1024),
    }
    v3 = v2 | {"bin/big.dat": big2[: 1 * MiB] + content(6, 4096) + big2[1 * MiB + 4096 :]}
    return {"1.0": v1, "2.0": v2, "3.0": v3}


async def publish_product(target: str, directory: Path) -> Product:
    product_id = uuid.uuid4()
    versions = _versions()
    reports = {}
    for name, files in versions.items():
        reports[name] = await publish_files(
            target,
            product_id,
            name,
            files,
            directory / name,
            branch="beta" if name == "3.0" else "",
            release_notes=f"Release {name}.",
        )
    return Product(product_id, versions, reports)


def tree(root: Path) -> dict[str, bytes]:
    """Relative path → bytes of the game files under `root` (the launcher's own directory left out)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and META_DIR not in p.relative_to(root).parts
    }


def identities(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime ns) of every game file: a file rewritten gets a new one."""
    found = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and META_DIR not in p.relative_to(root).parts:
            stat = p.stat()
            found[p.relative_to(root).as_posix()] = (stat.st_ino, stat.st_mtime_ns)
    return found


def launcher_env(user: uuid.UUID, state: Path, target: str = ENVOY_GRPC) -> dict[str, str]:
    return {
        "LIBRARY_TOKEN": mint(str(user)),
        "LIBRARY_TARGET": target,
        "LIBRARY_DEVICE_ID": state.name,
        "LIBRARY_STATE_DIR": str(state),
    }


async def spawn(user: uuid.UUID, state: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client",
        *args,
        cwd=ROOT,
        env={**os.environ, **launcher_env(user, state)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def launcher(user: uuid.UUID, state: Path, *args: str) -> tuple[int, dict | str, str]:
    """(exit code, stdout parsed as JSON when it is, stderr) of the launcher's command line `ARGS` as
    `user`, run in this process (the same parser and handlers as `python -m client`, without paying for a
    new interpreter per command); `spawn` runs it as a process of its own."""
    env = launcher_env(user, state)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                parsed_args = build_parser().parse_args(list(args))
            except SystemExit as exc:
                code = int(exc.code or 0)
            else:
                code = await parsed_args.handler(parsed_args)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    text = out.getvalue()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    return code, parsed, err.getvalue()
