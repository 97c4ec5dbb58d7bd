"""`buf breaking` guards v1: an incompatible change to a scratch copy of the contracts is caught."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.processes import ROOT

BUF = ROOT / ".venv" / "bin" / "buf"


def _breaking(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BUF), "breaking", "--against", "proto/baseline/v1.binpb"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _scratch_copy(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for part in ("proto", "third_party"):
        shutil.copytree(ROOT / part, repo / part)
    shutil.copy(ROOT / "buf.yaml", repo / "buf.yaml")
    return repo


def test_the_committed_contracts_are_compatible_with_the_baseline(tmp_path):
    result = _breaking(_scratch_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_changing_a_field_type_breaks_the_build(tmp_path):
    repo = _scratch_copy(tmp_path)
    proto = repo / "proto" / "download" / "v1" / "download_service.proto"
    text = proto.read_text()
    assert "int64 downloaded_bytes" in text
    proto.write_text(text.replace("int64 downloaded_bytes", "int32 downloaded_bytes", 1))
    result = _breaking(repo)
    assert result.returncode != 0
    assert "downloaded_bytes" in result.stdout + result.stderr
