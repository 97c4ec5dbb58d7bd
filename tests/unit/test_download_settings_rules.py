"""Pure download settings rules: defaults, branches, the schedule window in the user's time zone (DST and
midnight included), and what an update changes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time

import pytest

from server.downloads.settings_rules import (
    BANDWIDTH,
    BRANCHES,
    MAX_CONCURRENT,
    SCHEDULE,
    DownloadSettings,
    ScheduleWindow,
    SettingsChange,
    apply_change,
    branch_for,
    in_schedule_window,
    is_time_zone,
)

PRODUCT = "7d3f7f4e-6f2c-4c55-9d0b-4b8f5b1b2a10"
OTHER = "0b0e5a64-3f43-4f0e-8f0a-8d7f3c1c2b11"


def _at(hour: int, minute: int = 0, *, month: int = 1, day: int = 15) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def test_defaults_are_three_downloads_no_limit_no_schedule_public_branch():
    settings = DownloadSettings()

    assert (settings.max_concurrent_downloads, settings.bandwidth_kbps, settings.schedule) == (3, 0, None)
    assert settings.etag == "v0"
    assert branch_for(settings, PRODUCT) == "public"
    assert in_schedule_window(settings, _at(3))


def test_branch_for_answers_the_chosen_branch_for_uuid_or_string_ids():
    settings = DownloadSettings(branches={PRODUCT: "beta"})

    assert branch_for(settings, PRODUCT) == "beta"
    assert branch_for(settings, uuid.UUID(PRODUCT)) == "beta"
    assert settings.branch_for(OTHER) == "public"


@pytest.mark.parametrize(
    ("hour", "minute", "inside"),
    [(8, 59, False), (9, 0, True), (12, 30, True), (16, 59, True), (17, 0, False), (23, 0, False)],
)
def test_a_daytime_window_includes_its_start_and_excludes_its_end(hour, minute, inside):
    settings = DownloadSettings(schedule=ScheduleWindow(time(9), time(17), "UTC"))
    assert in_schedule_window(settings, _at(hour, minute)) is inside


@pytest.mark.parametrize(
    ("hour", "inside"), [(21, False), (22, True), (23, True), (0, True), (5, True), (6, False)]
)
def test_a_window_ending_before_it_starts_spans_midnight(hour, inside):
    settings = DownloadSettings(schedule=ScheduleWindow(time(22), time(6), "UTC"))
    assert in_schedule_window(settings, _at(hour)) is inside


def test_the_window_is_local_time_in_the_users_zone_across_daylight_saving():
    settings = DownloadSettings(schedule=ScheduleWindow(time(1), time(3), "Europe/Berlin"))

    # Winter: Berlin is UTC+1, so 01:00-03:00 local is 00:00-02:00 UTC.
    assert in_schedule_window(settings, _at(0, 30))
    assert not in_schedule_window(settings, _at(2, 30))
    # Summer: UTC+2, so the window is 23:00-01:00 UTC of the previous evening.
    assert in_schedule_window(settings, _at(23, 30, month=7, day=14))
    assert not in_schedule_window(settings, _at(1, 30, month=7, day=15))


@pytest.mark.parametrize(
    ("name", "known"),
    [
        ("Europe/Berlin", True),
        ("UTC", True),
        ("Mars/Olympus", False),
        ("", False),
        ("../etc/passwd", False),
        ("/etc/localtime", False),
    ],
)
def test_time_zones_are_iana_names(name, known):
    assert is_time_zone(name) is known


def test_a_change_without_a_mask_touches_only_what_it_sets_and_merges_branches():
    current = DownloadSettings(
        max_concurrent_downloads=5,
        bandwidth_kbps=1000,
        schedule=ScheduleWindow(time(1), time(2), "UTC"),
        branches={PRODUCT: "beta"},
    )

    updated = apply_change(
        current, SettingsChange(fields=frozenset({BANDWIDTH}), bandwidth_kbps=0, branches={OTHER: "beta"})
    )

    assert updated == DownloadSettings(
        max_concurrent_downloads=5,
        bandwidth_kbps=0,
        schedule=ScheduleWindow(time(1), time(2), "UTC"),
        branches={PRODUCT: "beta", OTHER: "beta"},
    )


def test_choosing_the_public_branch_removes_the_products_choice():
    current = DownloadSettings(branches={PRODUCT: "beta", OTHER: "nightly"})

    updated = apply_change(current, SettingsChange(branches={PRODUCT: "public"}))

    assert updated.branches == {OTHER: "nightly"}


def test_named_fields_without_values_reset_and_the_branch_list_is_replaced():
    current = DownloadSettings(
        max_concurrent_downloads=5,
        schedule=ScheduleWindow(time(1), time(2), "UTC"),
        branches={PRODUCT: "beta", OTHER: "nightly"},
    )

    updated = apply_change(
        current,
        SettingsChange(fields=frozenset({MAX_CONCURRENT, SCHEDULE, BRANCHES}), branches={OTHER: "beta"}),
    )

    assert (updated.max_concurrent_downloads, updated.schedule, updated.branches) == (
        3,
        None,
        {OTHER: "beta"},
    )


def test_an_empty_change_is_recognised():
    assert SettingsChange().is_empty
    assert not SettingsChange(branches={PRODUCT: "public"}).is_empty
    assert not SettingsChange(fields=frozenset({SCHEDULE})).is_empty
