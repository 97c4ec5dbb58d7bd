"""A stack setting as the shell scripts see it: the environment first, else scripts/lib/env.sh's default.

For the Python tools that can also run outside `make` (scripts/render-envoy.py, scripts/mint-token).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_defaults: dict[str, str] | None = None


def env(name: str) -> str:
    global _defaults
    if name in os.environ:
        return os.environ[name]
    if _defaults is None:
        out = subprocess.run(
            ["bash", "-c", 'source "$1" >/dev/null && env -0', "bash", str(ROOT / "scripts/lib/env.sh")],
            check=True,
            capture_output=True,
        ).stdout
        _defaults = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    return _defaults.get(name, "")
