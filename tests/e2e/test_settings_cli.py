"""`python -m client settings` as a player runs it, against the service through Envoy's native gRPC edge."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

from scripts.devtokens import mint

ENVOY_GRPC = f"127.0.0.1:{os.environ.get('ENVOY_PORT', '8080')}"


async def cli(user: uuid.UUID, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m client ARGS` as `user`."""
    env = {
        **os.environ,
        "LIBRARY_TOKEN": mint(str(user)),
        "LIBRARY_TARGET": ENVOY_GRPC,
        "LIBRARY_DEVICE_ID": "cli-box",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode())
    return proc.returncode, out.decode(), err.decode()


async def test_get_set_and_patch_round_trip_with_json_output(owner, grpc_target):
    user, product = owner

    code, out, _ = await cli(user, "--json", "settings", "get", str(product))
    assert code == 0
    empty = json.loads(out)
    assert (empty["settings"], empty["lastSyncedAt"]) == ({}, None)

    code, out, _ = await cli(
        user,
        "settings",
        "set",
        str(product),
        "--file",
        "-",
        "--etag",
        empty["etag"],
        "--json",
        stdin='{"graphics": {"quality": "high", "vsync": true}, "sound": 0.7}',
    )
    assert code == 0
    written = json.loads(out)
    assert written["updatedByDeviceId"] == "cli-box"

    code, out, _ = await cli(
        user, "settings", "patch", str(product), "graphics.vsync=null", "graphics.fov=90", "--json"
    )
    assert code == 0
    assert json.loads(out)["settings"] == {"graphics": {"quality": "high", "fov": 90}, "sound": 0.7}

    code, out, _ = await cli(user, "settings", "get", str(product))
    assert code == 0
    assert "synced" in out and "by cli-box" in out
    assert '"fov": 90' in out


async def test_failures_name_the_problem_and_exit_non_zero(owner, grpc_target):
    user, product = owner
    code, out, _ = await cli(user, "--json", "settings", "set", str(product), "--value", '{"a": 1}')
    stale = json.loads(out)["etag"]
    await cli(user, "settings", "set", str(product), "--value", '{"a": 2}')

    code, _, err = await cli(user, "settings", "set", str(product), "--value", '{"a": 3}', "--etag", stale)
    assert code == 1
    assert err.startswith("error: ETAG_MISMATCH:")

    code, _, err = await cli(user, "settings", "get", str(uuid.uuid4()))
    assert (code, err.split(":")[:2]) == (1, ["error", " PRODUCT_ACCESS_DENIED"])

    code, _, err = await cli(user, "settings", "set", str(product), "--value", "[1, 2]")
    assert (code, err.strip()) == (1, "error: the settings must be a JSON object ({...})")

    code, _, err = await cli(user, "settings", "get", "not-a-uuid")
    assert code == 1
    assert err.splitlines() == ["error: VALIDATION_FAILED:", "  product_id: must be a valid UUID"]
    assert "Traceback" not in err

    code, out, _ = await cli(user, "--json", "settings", "get", str(product))
    assert json.loads(out)["settings"] == {"a": 2}


async def test_download_settings_show_change_and_clear_the_schedule(grpc_target):
    user = uuid.uuid4()

    code, out, _ = await cli(user, "settings", "downloads")
    assert code == 0
    assert "downloads at once   3" in out and "any time" in out

    code, out, _ = await cli(
        user,
        "--json",
        "settings",
        "downloads",
        "--max-concurrent",
        "2",
        "--bandwidth",
        "20000",
        "--schedule",
        "01:00-07:00",
        "--time-zone",
        "Europe/Berlin",
        "--etag",
        "v0",
    )
    assert code == 0
    changed = json.loads(out)
    assert (changed["maxConcurrentDownloads"], changed["bandwidthLimitKbps"], changed["etag"]) == (
        2,
        20000,
        "v1",
    )
    assert changed["schedule"] == {"startTime": "01:00", "endTime": "07:00", "timeZone": "Europe/Berlin"}

    code, out, _ = await cli(user, "--json", "settings", "downloads", "--no-schedule", "--bandwidth", "0")
    assert code == 0
    cleared = json.loads(out)
    assert (cleared["schedule"], cleared["bandwidthLimitKbps"], cleared["maxConcurrentDownloads"]) == (
        None,
        0,
        2,
    )

    code, _, err = await cli(user, "settings", "downloads", "--max-concurrent", "11")
    assert code == 1
    assert err.splitlines() == [
        "error: VALIDATION_FAILED:",
        "  settings.max_concurrent_downloads: must be greater than or equal to 1"
        " and less than or equal to 10",
    ]
    code, _, err = await cli(user, "settings", "downloads", "--bandwidth", "1", "--etag", "v1")
    assert (code, err.split(":")[:2]) == (1, ["error", " ETAG_MISMATCH"])
    code, _, err = await cli(user, "settings", "downloads", "--schedule", "01:00")
    assert (code, err.strip()) == (1, "error: --schedule '01:00' is not HH:MM-HH:MM (e.g. 01:00-07:00)")
