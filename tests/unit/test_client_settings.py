"""The settings CLI's pure parts: KEY=VALUE assignments into a merge patch."""

from __future__ import annotations

import pytest

from client.cli.settings import UsageError, parse_assignments


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
