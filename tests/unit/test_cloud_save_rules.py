"""Pure cloud-save rules: the automatic conflict policies, quota, retention, etags, conflict metadata."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from server.cloud_saves.rules import (
    Limits,
    Policy,
    SaveGame,
    Winner,
    conflict_metadata,
    decide,
    object_key,
    oldest_retained,
    quota_problem,
    slot_etag,
)

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
LIMITS = Limits(quota_bytes=1000, max_file_bytes=500, max_slots=3, retained_versions=10)


def _save(**changes) -> SaveGame:
    base = SaveGame(
        savegame_id=uuid.uuid4(),
        product_id=uuid.uuid4(),
        slot_name="slot 1",
        status="committed",
        version_number=3,
        base_version=2,
        file_size_bytes=100,
        file_hash_sha256="a" * 64,
        client_modified_at=T0,
        server_uploaded_at=T0,
        device_id="pc",
        playtime_seconds=600,
        progress_percentage=40.0,
        description="",
        etag="e",
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("policy", "local", "cloud", "winner"),
    [
        (Policy.MOST_RECENTLY_MODIFIED, {"client_modified_at": T0 + timedelta(seconds=1)}, {}, Winner.LOCAL),
        (Policy.MOST_RECENTLY_MODIFIED, {"client_modified_at": T0 - timedelta(seconds=1)}, {}, Winner.CLOUD),
        (Policy.LONGEST_PLAYTIME, {"playtime_seconds": 601}, {}, Winner.LOCAL),
        (Policy.LONGEST_PLAYTIME, {"playtime_seconds": 0}, {}, Winner.CLOUD),
        (Policy.HIGHEST_PROGRESS, {"progress_percentage": 40.5}, {}, Winner.LOCAL),
        (Policy.HIGHEST_PROGRESS, {}, {"progress_percentage": 99.0}, Winner.CLOUD),
    ],
)
def test_an_automatic_policy_keeps_the_side_it_names(policy, local, cloud, winner):
    assert decide(policy, _save(**local), _save(**cloud)) is winner


@pytest.mark.parametrize(
    ("policy", "local", "cloud"),
    [
        (Policy.MOST_RECENTLY_MODIFIED, {}, {}),  # same time
        (Policy.LONGEST_PLAYTIME, {}, {}),  # same playtime
        (Policy.LONGEST_PLAYTIME, {"playtime_seconds": None}, {}),  # the upload does not know
        (Policy.LONGEST_PLAYTIME, {}, {"playtime_seconds": None}),  # the cloud does not know
        (Policy.HIGHEST_PROGRESS, {}, {}),
        (Policy.HIGHEST_PROGRESS, {"progress_percentage": None}, {"progress_percentage": 1.0}),
        (Policy.MANUAL, {"client_modified_at": T0 + timedelta(days=1)}, {}),
        (0, {"playtime_seconds": 10**6}, {}),  # unspecified is MANUAL
    ],
)
def test_ties_missing_values_and_manual_ask_the_user(policy, local, cloud):
    assert decide(policy, _save(**local), _save(**cloud)) is None


def test_the_quota_counts_bytes_held_and_refuses_what_would_exceed_it():
    held = {"a"}
    assert quota_problem(LIMITS, used_bytes=900, slot_names=held, slot_name="a", size=100) is None
    assert "exceed" in quota_problem(LIMITS, used_bytes=900, slot_names=held, slot_name="a", size=101)


def test_a_new_slot_beyond_the_slot_limit_is_refused_but_existing_slots_still_take_versions():
    full = {"a", "b", "c"}
    assert "slots" in quota_problem(LIMITS, used_bytes=0, slot_names=full, slot_name="d", size=1)
    assert quota_problem(LIMITS, used_bytes=0, slot_names=full, slot_name="c", size=1) is None


def test_retention_keeps_the_newest_versions_and_always_the_head():
    assert oldest_retained(5, 3) == 3  # keeps 3, 4, 5
    assert oldest_retained(2, 3) == 1  # nothing to prune yet
    assert oldest_retained(10, 10) == 1
    assert oldest_retained(11, 10) == 2
    assert oldest_retained(9, 0) == 9  # the head is never pruned


def test_the_slot_etag_changes_with_the_head_and_the_conflict_candidates():
    head, conflict = _save(), _save(status="conflict", version_number=0)
    plain = slot_etag(head, [])
    assert slot_etag(head, []) == plain
    assert slot_etag(head, [conflict]) != plain
    assert slot_etag(dataclasses.replace(head, version_number=4), []) != plain
    assert slot_etag(None, []) != plain


def test_conflict_metadata_describes_both_sides_and_leaves_out_what_a_side_lacks():
    local = _save(status="conflict", version_number=0, device_id="deck", playtime_seconds=None)
    cloud = _save(progress_percentage=None, file_size_bytes=123)
    metadata = conflict_metadata(local, cloud)
    assert metadata == {
        "savegameId": str(local.savegame_id),
        "slotName": "slot 1",
        "cloudSavegameId": str(cloud.savegame_id),
        "cloudVersionNumber": "3",
        "localClientModifiedAt": "2026-03-04T05:06:07Z",
        "localDeviceId": "deck",
        "localFileSizeBytes": "100",
        "localProgressPercentage": "40",
        "cloudClientModifiedAt": "2026-03-04T05:06:07Z",
        "cloudDeviceId": "pc",
        "cloudFileSizeBytes": "123",
        "cloudPlaytimeSeconds": "600",
    }


def test_object_keys_are_made_by_the_server_per_save_game():
    user, product, save = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert object_key(user, product, save) == f"saves/{user}/{product}/{save}"
