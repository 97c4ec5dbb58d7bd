"""`python -m client saves` as players run it on two devices, against the service through Envoy's native gRPC
edge, with the real PUTs and GETs to SeaweedFS."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import uuid
from pathlib import Path

from scripts.devtokens import mint
from server.core.s3 import ObjectStore

ENVOY_GRPC = f"127.0.0.1:{os.environ.get('ENVOY_PORT', '8080')}"


async def cli(user: uuid.UUID, device: Path, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m client ARGS` as `user` on the device whose state is in
    `device` (its own sync state directory, and its name as device id)."""
    env = {
        **os.environ,
        "LIBRARY_TOKEN": mint(str(user)),
        "LIBRARY_TARGET": ENVOY_GRPC,
        "LIBRARY_DEVICE_ID": device.name,
        "LIBRARY_STATE_DIR": str(device),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def test_two_devices_push_pull_conflict_resolve_and_restore(owner, grpc_target, tmp_path):
    user, product = owner
    pc, deck = tmp_path / "pc", tmp_path / "deck"
    pc.mkdir(), deck.mkdir()
    p = str(product)
    first = os.urandom(300_000)
    (pc / "save.dat").write_bytes(first)

    code, out, err = await cli(user, pc, "--json", "saves", "push", p, "slot 1", str(pc / "save.dat"))
    assert code == 0, err
    pushed = json.loads(out)
    assert (pushed["committed"], pushed["saveGame"]["version_number"]) == (True, 1)

    # The other device pulls it (verified), changes it and pushes version 2.
    code, out, err = await cli(user, deck, "saves", "pull", p, "slot 1", str(deck / "save.dat"))
    assert code == 0, err
    assert "SHA-256 verified" in out
    assert (deck / "save.dat").read_bytes() == first
    (deck / "save.dat").write_bytes(os.urandom(1000))
    code, _, err = await cli(
        user, deck, "saves", "push", p, "slot 1", str(deck / "save.dat"), "--playtime", "60"
    )
    assert code == 0, err

    # The first device, still at version 1, pushes its own change: a conflict, both sides shown, exit 3.
    (pc / "save.dat").write_bytes(os.urandom(2000))
    code, out, err = await cli(
        user, pc, "saves", "push", p, "slot 1", str(pc / "save.dat"), "--playtime", "90"
    )
    assert code == 3
    assert "conflict in slot 'slot 1'" in err and "version 2" in err
    assert "pc" in err and "deck" in err and "90" in err and "60" in err
    assert "saves resolve" in err

    code, out, _ = await cli(user, pc, "--json", "saves", "list", p)
    [slot] = json.loads(out)["slots"]
    [candidate] = slot["conflicts"]
    assert candidate["device_id"] == "pc"

    code, out, err = await cli(
        user,
        pc,
        "--json",
        "saves",
        "resolve",
        p,
        "slot 1",
        candidate["savegame_id"],
        "--keep",
        "both",
        "--new-slot",
        "slot 1 pc",
    )
    assert code == 0, err
    resolved = json.loads(out)
    assert resolved["newSlot"]["head"]["device_id"] == "pc"
    assert resolved["slot"]["conflicts"] == []

    code, out, err = await cli(user, pc, "saves", "restore", p, "slot 1", "1")
    assert code == 0, err
    assert "as version 3" in out
    code, _, err = await cli(user, pc, "saves", "pull", p, "slot 1", str(pc / "restored.dat"))
    assert code == 0, err
    assert (pc / "restored.dat").read_bytes() == first

    code, out, _ = await cli(user, pc, "saves", "list", p)
    assert code == 0
    assert "slot 1 pc" in out and "3, 2, 1" in out


async def test_a_download_that_does_not_match_its_sha256_leaves_the_local_file_alone(
    owner, grpc_target, tmp_path, settings
):
    user, product = owner
    device = tmp_path / "pc"
    device.mkdir()
    save = device / "save.dat"
    save.write_bytes(b"the real save")
    code, out, err = await cli(user, device, "--json", "saves", "push", str(product), "s", str(save))
    assert code == 0, err
    savegame_id = json.loads(out)["saveGame"]["savegame_id"]
    # The stored object is replaced behind the service's back (a corrupted store).
    corrupt = b"corrupted bytes"
    async with ObjectStore(settings) as store:
        await store.put(
            f"saves/{user}/{product}/{savegame_id}", corrupt, sha256_hex=hashlib.sha256(corrupt).hexdigest()
        )
    save.write_bytes(b"my local progress")

    code, _, err = await cli(user, device, "saves", "pull", str(product), "s", str(save))

    assert code == 1
    assert "does not match its SHA-256" in err
    assert save.read_bytes() == b"my local progress"
    assert [p.name for p in device.iterdir() if p.name.endswith(".part")] == []


async def test_cli_failures_name_the_problem(owner, grpc_target, tmp_path):
    user, product = owner
    device = tmp_path / "pc"
    device.mkdir()
    code, _, err = await cli(user, device, "saves", "push", str(product), "s", str(device / "missing.dat"))
    assert (code, err.strip()) == (1, f"error: {device / 'missing.dat'} is not a file")
    code, _, err = await cli(user, device, "saves", "pull", str(product), "s", str(device / "x"))
    assert (code, err.strip()) == (1, "error: there is no save in slot 's'")
    (device / "f").write_bytes(b"x")
    code, _, err = await cli(user, device, "saves", "push", str(uuid.uuid4()), "s", str(device / "f"))
    assert code == 1 and err.startswith("error: PRODUCT_ACCESS_DENIED")
    code, _, err = await cli(user, device, "saves", "push", str(product), "bad/slot", str(device / "f"))
    assert code == 1 and "VALIDATION_FAILED" in err and "slot_name" in err
