"""A player's launcher and a build pipeline's `publish` run without the server package: every module of
client/ imports in a fresh interpreter without loading anything of server/ (the chunk store's format they
share with it lives in content_store/)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import client

ROOT = Path(__file__).resolve().parents[2]


def test_no_module_of_the_client_loads_the_server_package():
    modules = sorted(m.name for m in pkgutil.walk_packages(client.__path__, "client."))
    assert "client.engine.fetch" in modules and "client.cli.publish" in modules
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'server' or m.startswith('server.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'gen' / 'python'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"
