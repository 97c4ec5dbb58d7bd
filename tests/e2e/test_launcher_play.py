"""`python -m client play PRODUCT -- CMD` as players run it on two devices (two config directories), with a
dummy game (a small Python script) that writes its save, against the real stack: playtime sessions with
heartbeats, cloud saves in SeaweedFS through presigned URLs, conflicts resolved by the command shown.

The module runs its own `python -m server` with a 2 s heartbeat interval (and its own Redis, so its
reaper never sees the other servers' sessions); the launcher talks native gRPC to it, as a game client does.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from client import config
from library.v1 import playtime_service_pb2 as pb
from library.v1 import playtime_service_pb2_grpc
from scripts.devtokens import mint
from server.playtime.tables import STATUS_ENDED, PlaytimeSession
from tests.support.auth import user_metadata
from tests.support.processes import PrivateRedis, free_port, python_server, wait_serving
from tests.support.waiting import wait_until

INTERVAL = 2

# The dummy game: checks and writes its save `slot1`, says it started, runs until told to quit, and saves
# once more when interrupted (as a game does on Ctrl-C).
GAME = """
import argparse, pathlib, sys, time
p = argparse.ArgumentParser()
p.add_argument("save_dir", type=pathlib.Path)
p.add_argument("--expect")
p.add_argument("--write")
p.add_argument("--started")
p.add_argument("--until")
p.add_argument("--exit", type=int, default=0)
a = p.parse_args()
save = a.save_dir / "slot1"
if a.expect is not None and (not save.exists() or save.read_text() != a.expect):
    sys.exit(9)
if a.write is not None:
    a.save_dir.mkdir(parents=True, exist_ok=True)
    save.write_text(a.write)
try:  # the started file inside it: a SIGINT may come as soon as the file exists, before touch() returns
    if a.started:
        pathlib.Path(a.started).touch()
    while a.until and not pathlib.Path(a.until).exists():
        time.sleep(0.05)
except KeyboardInterrupt:
    save.write_text(save.read_text() + " (saved on quit)")
sys.exit(a.exit)
"""


@pytest.fixture(scope="module")
async def play_target():
    redis = PrivateRedis()
    await redis.start()
    port = free_port()
    with python_server(
        "test-launcher-play-server.log",
        REDIS_URL=redis.url,
        GRPC_PORT=str(port),
        METRICS_PORT=str(free_port()),
        PLAYTIME_HEARTBEAT_INTERVAL_SECONDS=str(INTERVAL),
    ):
        address = f"127.0.0.1:{port}"
        await wait_serving(address)
        yield address
    await redis.stop()


class Device:
    """One player's machine: its own config directory (token, device id, save directory)."""

    def __init__(self, root: Path, name: str, target: str, user: uuid.UUID) -> None:
        self.name, self.target, self.user = name, target, user
        self.config = root / name / "config"
        self.saves = root / name / "saves"
        self.game = root / "game.py"
        self.game.write_text(GAME)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIBRARY_")}
        return {**env, "PYTHONUNBUFFERED": "1"}

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "client",
            "--config-dir",
            str(self.config),
            *args,
            env=self._env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def run(self, *args: str) -> tuple[int, str, str]:
        proc = await self.start(*args)
        out, err = await proc.communicate()
        return proc.returncode, out.decode(), err.decode()

    def configure(self) -> None:
        """What `login` leaves behind, written directly (one CLI start less per device)."""
        config.save(self.config, config.LauncherConfig(self.target, mint(str(self.user)), self.name))

    async def login(self) -> None:
        code, out, err = await self.run(
            "--token", mint(str(self.user)), "--target", self.target, "login", "--device", self.name
        )
        assert code == 0, err
        assert f"logged in as {self.user}" in out

    def play_args(self, product: uuid.UUID, *game_args: str) -> list[str]:
        return [
            "--json",
            "play",
            str(product),
            "--save-dir",
            str(self.saves),
            "--",
            sys.executable,
            str(self.game),
            str(self.saves),
            *game_args,
        ]

    async def play(self, product: uuid.UUID, *game_args: str) -> tuple[int, dict, str]:
        code, out, err = await self.run(*self.play_args(product, *game_args))
        return code, json.loads(out), err


async def finished(proc: asyncio.subprocess.Process) -> tuple[int, dict, str]:
    out, err = await proc.communicate()
    return proc.returncode, json.loads(out), err.decode()


@pytest.fixture
async def devices(owner, play_target, tmp_path):
    user, product = owner
    pc, deck = Device(tmp_path, "pc", play_target, user), Device(tmp_path, "deck", play_target, user)
    pc.configure()
    deck.configure()
    return pc, deck, product


async def credited_so_far(target: str, user: uuid.UUID, product: uuid.UUID) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = playtime_service_pb2_grpc.PlaytimeTrackerServiceStub(channel)
        reply = await stub.GetPlaytimeStats(
            pb.GetPlaytimeStatsRequest(product_ids=[str(product)]), metadata=user_metadata(user)
        )
    return reply.stats[0].total_playtime_seconds if reply.stats else 0


async def ended_session(sessions, session_id: str) -> PlaytimeSession:
    async with sessions() as session:
        row = await session.scalar(select(PlaytimeSession).where(PlaytimeSession.id == uuid.UUID(session_id)))
    assert row is not None
    return row


async def test_play_heartbeats_credits_time_pushes_the_save_and_another_device_pulls_it(
    devices, play_target, tmp_path, sessions
):
    pc, deck, product = devices
    await pc.login()
    quit_file = tmp_path / "quit"
    game = await pc.start(*pc.play_args(product, "--write", "chapter 3", "--until", str(quit_file)))

    # A running session is credited up to its last heartbeat: only the launcher's heartbeats, at the
    # server's interval, make this grow while the game runs.
    async def credited_while_running() -> bool:
        return await credited_so_far(play_target, pc.user, product) >= 2 * INTERVAL

    await wait_until(credited_while_running, what="heartbeats crediting the running game", timeout=60)
    quit_file.touch()
    code, report, err = await finished(game)

    assert code == 0, err
    assert (report["game_returncode"], report["interrupted"], report["exitCode"]) == (0, False, 0)
    assert report["heartbeat_interval_seconds"] == INTERVAL
    assert report["heartbeats_sent"] >= 2 and report["heartbeats_failed"] == 0
    assert report["credited_seconds"] >= 2 * INTERVAL
    assert report["total_playtime_seconds"] == await credited_so_far(play_target, pc.user, product)
    assert (report["pulled"], report["pushed"], report["conflicts"]) == ([], ["slot1"], [])
    row = await ended_session(sessions, report["session_id"])
    assert row.ended_at is not None and row.device_id == "pc"

    # The other device pulls it before its game starts (the game exits 9 if the save is not there).
    code, report, err = await deck.play(product, "--expect", "chapter 3")
    assert code == 0, err
    assert (report["pulled"], report["pushed"], report["game_returncode"]) == (["slot1"], [], 0)
    assert (deck.saves / "slot1").read_text() == "chapter 3"

    code, out, err = await pc.run("library")
    assert code == 0, err
    assert str(product) in out


async def test_a_save_changed_on_two_devices_at_once_is_a_conflict_resolved_by_the_command_shown(
    devices, tmp_path
):
    pc, deck, product = devices
    code, report, err = await pc.play(product, "--write", "v1")
    assert (code, report["pushed"]) == (0, ["slot1"]), err

    # Both devices play at once from version 1; the deck quits first and pushes version 2.
    quit_file, started = tmp_path / "quit", tmp_path / "pc-started"
    pc_game = await pc.start(
        *pc.play_args(
            product, "--expect", "v1", "--write", "pc's", "--started", str(started), "--until", str(quit_file)
        )
    )
    await wait_until(started.exists, what="the pc's game to start")
    code, report, err = await deck.play(product, "--expect", "v1", "--write", "deck's")
    assert (code, report["pulled"], report["pushed"]) == (0, ["slot1"], ["slot1"]), err
    quit_file.touch()
    code, report, err = await finished(pc_game)

    # The pc's push was based on version 1: kept in the cloud as a candidate, both sides shown, exit 3.
    assert code == 3
    assert (report["game_returncode"], report["pushed"]) == (0, [])
    [conflict] = report["conflicts"]
    assert (conflict["slot_name"], conflict["cloud_version"]) == ("slot1", 2)
    assert "conflict in slot 'slot1'" in err and "pc" in err and "deck" in err
    [hint] = [line for line in err.splitlines() if " saves resolve " in line]
    argv = shlex.split(hint.replace("--keep local|cloud|both [--new-slot NAME]", "--keep local"))
    assert argv[:5] == ["python", "-m", "client", "--config-dir", str(pc.config)]
    code, out, err = await pc.run(*argv[5:])
    assert code == 0, err
    assert "resolved: 'slot1' is at version 3" in out

    # The deck's next game starts with the pc's save, which won the conflict.
    code, report, err = await deck.play(product, "--expect", "pc's")
    assert (code, report["pulled"]) == (0, ["slot1"]), err

    # A save changed here while the cloud moved on stops before the game starts.
    (deck.saves / "slot1").write_text("deck, offline")
    code, report, err = await pc.play(product, "--expect", "pc's", "--write", "pc again")
    assert (code, report["pushed"]) == (0, ["slot1"]), err
    code, report, err = await deck.play(product, "--started", str(tmp_path / "deck-started"))
    assert (code, report["game_returncode"], report["session_id"]) == (3, None, "")
    assert "the game was not started" in err and " saves resolve " in err
    assert not (tmp_path / "deck-started").exists()
    assert (deck.saves / "slot1").read_text() == "deck, offline"
    # Trying again before resolving shows the same waiting candidate; nothing new is uploaded.
    [waiting] = report["conflicts"]
    code, again, _ = await deck.play(product)
    assert (code, [c["savegame_id"] for c in again["conflicts"]]) == (3, [waiting["savegame_id"]])


async def test_a_crashing_game_and_ctrl_c_still_end_the_session_and_push_the_saves(
    devices, tmp_path, sessions
):
    pc, _, product = devices
    code, report, err = await pc.play(product, "--write", "before the crash", "--exit", "3")
    assert code == 4, err
    assert (report["game_returncode"], report["pushed"], report["exitCode"]) == (3, ["slot1"], 4)
    row = await ended_session(sessions, report["session_id"])
    assert (row.status, row.ended_at is not None) == (STATUS_ENDED, True)

    started = tmp_path / "started"
    game = await pc.start(
        *pc.play_args(
            product, "--write", "level 2", "--started", str(started), "--until", str(tmp_path / "never")
        )
    )
    await wait_until(started.exists, what="the game to start")
    game.send_signal(signal.SIGINT)
    code, report, err = await finished(game)

    assert code == 130, err
    assert (report["interrupted"], report["game_returncode"], report["pushed"]) == (True, 0, ["slot1"])
    row = await ended_session(sessions, report["session_id"])
    assert (row.status, row.ended_at is not None) == (STATUS_ENDED, True)  # ended by the launcher
    assert (pc.saves / "slot1").read_text() == "level 2 (saved on quit)"
    code, out, err = await pc.run("--json", "saves", "list", str(product))
    [slot] = json.loads(out)["slots"]
    assert slot["head"]["file_size_bytes"] == len("level 2 (saved on quit)")
