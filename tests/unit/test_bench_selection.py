"""BENCH_CASES picks parts of `make bench` by name; a name it does not know stops the run before it starts."""

import pytest

from scripts.bench.db_cases import CASE_NAMES, selection

MODULES = ["cloud_saves", "websocket"]


def test_empty_or_all_selects_everything():
    for value in ("", "all"):
        picked = selection(value, MODULES)
        assert (picked.heartbeat, picked.modules, picked.db_cases) == (True, MODULES, CASE_NAMES)


def test_modules_and_db_cases_are_picked_by_name_without_the_heartbeat_stages():
    picked = selection("websocket, settings_update", MODULES)
    assert (picked.heartbeat, picked.modules, picked.db_cases) == (False, ["websocket"], ["settings_update"])


def test_db_selects_every_db_case_and_no_module():
    picked = selection("db", MODULES)
    assert (picked.heartbeat, picked.modules, picked.db_cases) == (False, [], CASE_NAMES)


def test_an_unknown_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown nope .*cloud_saves"):
        selection("nope", MODULES)
