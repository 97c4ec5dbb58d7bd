"""The rendered Envoy config changes exactly when what Envoy loads at start changes: `make stack-up`
restarts a running Envoy only when the newly rendered config differs from the one it runs
(scripts/stack-up.sh compares the two files), and the transcoder's descriptor set is a file the config
names, not config text. So the descriptor's hash is part of the rendering: a new descriptor at the same
path (a regenerated gen/descriptor.binpb after a merge) restarts Envoy, an unchanged one does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]


def _render(descriptor: Path, out: Path) -> str:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render-envoy.py"), "-o", str(out)],
        env={**os.environ, "ENVOY_DESCRIPTOR": str(descriptor)},
        check=True,
        capture_output=True,
    )
    return out.read_text()


def test_a_new_descriptor_at_the_same_path_changes_the_rendered_config_and_an_unchanged_one_does_not(
    tmp_path,
):
    descriptor = tmp_path / "descriptor.binpb"
    original = (ROOT / "gen" / "descriptor.binpb").read_bytes()
    descriptor.write_bytes(original)
    first = _render(descriptor, tmp_path / "a.yaml")
    assert _render(descriptor, tmp_path / "b.yaml") == first  # nothing changed: no restart

    files = descriptor_pb2.FileDescriptorSet.FromString(original)
    added = files.file.add(name="probe/v1/probe.proto", package="probe.v1", syntax="proto3")
    added.message_type.add(name="Probe")
    descriptor.write_bytes(files.SerializeToString())  # same path, new content (as after `make gen`)
    second = _render(descriptor, tmp_path / "c.yaml")

    assert second != first  # stack-up restarts Envoy
    changed = [(a, b) for a, b in zip(first.splitlines(), second.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and "Inputs of this rendering" in changed[0][0], changed
    assert f"proto_descriptor: {json.dumps(str(descriptor))}" in second  # the file Envoy loads
