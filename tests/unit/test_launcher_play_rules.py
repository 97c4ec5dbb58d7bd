"""The launcher's pure parts: which saves to pull, push or stop for, exit codes, signals passed on to the
game, the game's command line after `--`, and the heartbeat loop under a test clock."""

from __future__ import annotations

import signal

import grpc
import pytest

from client.__main__ import main, split_command_line
from client.cli.play import exit_code, signal_to_send
from client.sdk.playtime import PlaySession, SessionKeeper, retry_delay
from client.sdk.save_sync import CloudHead, PullPlan, Synced, changed_slots, plan_pull, save_files


def test_pull_plan_pulls_untouched_and_missing_files_and_stops_for_changes_on_both_sides():
    cloud = {
        "missing": CloudHead(2, "c"),
        "untouched": CloudHead(3, "new"),
        "same": CloudHead(4, "s"),
        "both": CloudHead(5, "cloud"),
        "only-here": CloudHead(1, "old"),
        "never-synced": CloudHead(1, "cloud"),
    }
    local = {"untouched": "old", "same": "s", "both": "mine", "only-here": "mine", "never-synced": "mine"}
    synced = {
        "untouched": Synced(2, "old"),
        "same": Synced(1, "x"),
        "both": Synced(4, "base"),
        "only-here": Synced(1, "old"),
    }

    assert plan_pull(local, synced, cloud) == PullPlan(
        pull=["missing", "untouched"], adopt=["same"], conflicts=["both", "never-synced"]
    )


def test_a_slot_already_in_step_needs_nothing():
    assert plan_pull({"a": "h"}, {"a": Synced(3, "h")}, {"a": CloudHead(3, "h")}) == PullPlan()


def test_cloud_slots_that_cannot_be_files_of_the_directory_are_never_pulled():
    cloud = {name: CloudHead(1, "c") for name in (".", "..", ".hidden", "save.dat")}

    assert plan_pull({}, {}, cloud) == PullPlan(pull=["save.dat"])


def test_changed_slots_are_new_files_and_files_that_differ_from_the_last_sync():
    local = {"new": "n", "edited": "e2", "same": "s"}
    synced = {"edited": Synced(2, "e1"), "same": Synced(1, "s"), "deleted": Synced(1, "d")}
    assert changed_slots(local, synced) == ["edited", "new"]


def test_save_files_are_the_top_level_files_named_like_slots(tmp_path):
    for name in ("slot 1", "auto.sav", ".slot1.x.part", "bad:name"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "screenshots").mkdir()

    files, skipped = save_files(tmp_path)

    assert sorted(files) == ["auto.sav", "slot 1"]
    assert skipped == ["bad:name", "screenshots"]
    assert save_files(tmp_path / "absent") == ({}, [])


@pytest.mark.parametrize(
    ("conflicts", "interrupted", "returncode", "expected"),
    [
        (False, False, 0, 0),
        (False, False, None, 0),
        (False, False, 3, 4),
        (False, False, -9, 4),
        (False, True, 0, 130),
        (False, True, -2, 130),
        (True, True, 1, 3),
        (True, False, None, 3),
    ],
)
def test_exit_codes_put_what_needs_attention_first(conflicts, interrupted, returncode, expected):
    assert exit_code(conflicts=conflicts, interrupted=interrupted, game_returncode=returncode) == expected


def test_signals_are_passed_on_once_then_escalate():
    # Ctrl-C in the terminal reached the game already; a SIGINT sent to the launcher alone is passed on.
    assert signal_to_send(signal.SIGINT, 1, from_terminal=True) is None
    assert signal_to_send(signal.SIGINT, 1, from_terminal=False) == signal.SIGINT
    assert signal_to_send(signal.SIGTERM, 1, from_terminal=True) == signal.SIGTERM
    assert signal_to_send(signal.SIGINT, 2, from_terminal=True) == signal.SIGTERM
    assert signal_to_send(signal.SIGINT, 3, from_terminal=True) == signal.SIGKILL
    assert signal_to_send(signal.SIGINT, 7, from_terminal=False) == signal.SIGKILL


def test_the_game_command_line_is_everything_after_the_first_double_dash():
    argv = ["play", "P", "--", "game", "--", "-x"]
    assert split_command_line(argv) == (["play", "P"], ["game", "--", "-x"])
    assert split_command_line(["library"]) == (["library"], [])


def test_only_play_takes_a_command_line(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["library", "--", "game"])
    assert exited.value.code == 2
    assert "only `play PRODUCT -- CMD...`" in capsys.readouterr().err


def _error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="boom")


class FakePlaytime:
    """Answers heartbeats from a script of outcomes (None = accepted)."""

    def __init__(self, outcomes: list[grpc.StatusCode | None]) -> None:
        self.outcomes, self.heartbeats, self.starts = outcomes, [], 0

    async def heartbeat(self, session: PlaySession) -> None:
        self.heartbeats.append(session.session_id)
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise _error(outcome)

    async def start(self, product_id: str, device_id: str) -> PlaySession:
        self.starts += 1
        return PlaySession(f"s{self.starts + 1}", product_id, device_id, 60.0, None, False)


async def _drive(fake: FakePlaytime, beats: int) -> tuple[SessionKeeper, list[float], list[str]]:
    """Runs the keeper for `beats` heartbeats on a test clock; returns it, the waits and the warnings."""
    waits, warnings = [], []

    async def sleep(seconds: float) -> None:
        if len(waits) == beats:
            raise _Stop
        waits.append(seconds)

    session = PlaySession("s1", "p", "pc", 60.0, None, False)
    keeper = SessionKeeper(fake, session, warn=warnings.append, sleep=sleep)  # type: ignore[arg-type]
    with pytest.raises(_Stop):
        await keeper.run()
    return keeper, waits, warnings


class _Stop(Exception):
    pass


async def test_a_lost_heartbeat_is_retried_sooner_and_the_rhythm_resumes():
    fake = FakePlaytime([None, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, None, None])
    keeper, waits, warnings = await _drive(fake, 5)

    assert waits == [60, 60, 15, 15, 60]
    assert (keeper.sent, keeper.failed) == (3, 2)
    assert len(warnings) == 2 and "UNAVAILABLE" in warnings[0] and "retrying in 15 s" in warnings[0]


async def test_a_session_the_server_closed_is_replaced_and_heartbeats_go_to_the_new_one():
    fake = FakePlaytime([grpc.StatusCode.NOT_FOUND, None, None])
    keeper, _, warnings = await _drive(fake, 3)

    assert fake.heartbeats == ["s1", "s2", "s2"]
    assert keeper.session.session_id == "s2"
    assert "new session" in warnings[0]


async def test_a_heartbeat_refused_as_too_frequent_waits_a_whole_interval():
    _, waits, _ = await _drive(FakePlaytime([grpc.StatusCode.RESOURCE_EXHAUSTED, None]), 2)
    assert waits == [60, 60]


def test_retry_delay_is_a_quarter_interval_within_bounds():
    assert [retry_delay(i) for i in (0.5, 2, 8, 60)] == [0.5, 1.0, 2.0, 15.0]
