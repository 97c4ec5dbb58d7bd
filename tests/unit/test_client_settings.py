"""The settings CLI's pure parts: KEY=VALUE pairs into a merge patch, download options into one change."""

from __future__ import annotations

import pytest

from client.__main__ import build_parser
from client.cli.settings import UsageError, download_change, parse_assignments
from client.sdk.download_settings import DownloadSettingsChange, Schedule


def test_assignments_build_a_nested_patch_with_json_values_and_strings():
    patch = parse_assignments(
        [
            "graphics.quality=ultra",
            "graphics.fov=90",
            "graphics.vsync=null",
            "sound=0.7",
            "name=Big Boss",
            "on=true",
        ]
    )

    assert patch == {
        "graphics": {"quality": "ultra", "fov": 90, "vsync": None},
        "sound": 0.7,
        "name": "Big Boss",
        "on": True,
    }


@pytest.mark.parametrize("bad", [["novalue"], ["=1"], ["a..b=1"], ["a=1", "a.b=2"]])
def test_malformed_assignments_are_usage_errors(bad):
    with pytest.raises(UsageError):
        parse_assignments(bad)


def _downloads_args(*argv: str):
    return build_parser().parse_args(["settings", "downloads", *argv])


def test_download_options_become_one_change():
    change = download_change(
        _downloads_args(
            "--max-concurrent",
            "4",
            "--schedule",
            "22:00 - 06:00",
            "--time-zone",
            "UTC",
            "--branch",
            "p1=beta",
            "--branch",
            "p2=public",
        )
    )

    assert change == DownloadSettingsChange(
        max_concurrent_downloads=4,
        schedule=Schedule("22:00", "06:00", "UTC"),
        branches={"p1": "beta", "p2": "public"},
    )
    assert download_change(_downloads_args()) == DownloadSettingsChange()
    assert download_change(_downloads_args("--no-schedule")).clear_schedule


@pytest.mark.parametrize("bad", [["--branch", "p1"], ["--branch", "=beta"], ["--schedule", "0100"]])
def test_malformed_download_options_are_usage_errors(bad):
    with pytest.raises(UsageError):
        download_change(_downloads_args(*bad))
