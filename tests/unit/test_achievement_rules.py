"""Pure achievement rules: monotonic progress, unlock transition, percentages, masking, unlock rates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.achievements.rules import (
    Definition,
    Progress,
    merge_progress,
    normalised_max_progress,
    progress_percentage,
    status_of,
    unlock_rate,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _definition(*, hidden: bool = False, max_progress: int = 10) -> Definition:
    return Definition(
        product_id="p",
        api_name="FIRST_BLOOD",
        display_name="First Blood",
        description="Win a duel",
        hidden=hidden,
        max_progress=max_progress,
        icon_url="https://cdn/icon.png",
        icon_locked_url="https://cdn/locked.png",
        display_order=1,
    )


def test_higher_report_raises_progress_without_unlocking():
    change = merge_progress(Progress(progress=3), 7, 10)
    assert (change.progress, change.unlocks, change.changed) == (7, False, True)


def test_lower_or_equal_report_is_ignored():
    assert merge_progress(Progress(progress=7), 3, 10).changed is False
    assert merge_progress(Progress(progress=7), 7, 10).changed is False
    assert merge_progress(Progress(progress=7), 3, 10).progress == 7


def test_reaching_max_unlocks():
    change = merge_progress(Progress(progress=9), 10, 10)
    assert (change.progress, change.unlocks, change.changed) == (10, True, True)


def test_report_above_max_is_capped_and_unlocks():
    change = merge_progress(Progress(), 1_000_000, 10)
    assert (change.progress, change.unlocks) == (10, True)


def test_binary_achievement_unlocks_with_one():
    assert merge_progress(Progress(), 1, normalised_max_progress(0)).unlocks is True
    assert merge_progress(Progress(), 0, normalised_max_progress(1)).changed is False


def test_unlocked_achievement_never_changes_again():
    unlocked = Progress(progress=10, is_unlocked=True, unlocked_at=T0)
    change = merge_progress(unlocked, 10, 10)
    assert (change.unlocks, change.changed, change.progress) == (False, False, 10)
    assert merge_progress(unlocked, 50, 100).changed is False


def test_progress_stored_above_a_lowered_max_unlocks_on_the_next_report():
    change = merge_progress(Progress(progress=8), 1, 5)
    assert (change.unlocks, change.progress) == (True, 8)


def test_zero_report_on_a_fresh_achievement_changes_nothing():
    assert merge_progress(Progress(), 0, 10).changed is False


@pytest.mark.parametrize(
    ("progress", "max_progress", "unlocked", "expected"),
    [(0, 10, False, 0), (3, 10, False, 30), (1, 3, False, 33), (2, 3, False, 66), (9, 10, False, 90)],
)
def test_percentage_is_floored(progress, max_progress, unlocked, expected):
    assert progress_percentage(progress, max_progress, unlocked) == expected


def test_percentage_is_100_once_unlocked_even_if_max_was_raised_later():
    assert progress_percentage(5, 20, True) == 100


def test_unlock_rate_is_a_fraction_of_owners_clamped_to_one():
    assert unlock_rate(1, 4) == 0.25
    assert unlock_rate(0, 0) == 0.0
    assert unlock_rate(3, 2) == 1.0


def test_hidden_locked_achievement_is_masked_completely():
    status = status_of(_definition(hidden=True), Progress(progress=4), 0.5)
    assert (status.api_name, status.display_name, status.description, status.icon_url) == ("", "", "", "")
    assert (status.progress, status.max_progress, status.progress_percentage) == (0, 0, 0)
    assert status.icon_locked_url == "https://cdn/locked.png"
    assert (status.hidden, status.is_unlocked, status.unlocked_at) == (True, False, None)
    assert status.global_unlock_rate == 0.5


def test_hidden_unlocked_achievement_is_revealed_with_its_first_unlock_time():
    status = status_of(_definition(hidden=True), Progress(progress=10, is_unlocked=True, unlocked_at=T0), 1.0)
    assert (status.display_name, status.description, status.icon_url) == (
        "First Blood",
        "Win a duel",
        "https://cdn/icon.png",
    )
    assert (status.is_unlocked, status.unlocked_at, status.progress_percentage) == (True, T0, 100)


def test_visible_locked_achievement_shows_everything_but_no_unlock_time():
    status = status_of(_definition(), Progress(progress=2), 0.0)
    assert status.display_name == "First Blood"
    assert status.unlocked_at is None


def test_shown_progress_never_exceeds_max():
    assert status_of(_definition(max_progress=5), Progress(progress=8), 0.0).progress == 5
