"""Pure game settings rules: RFC 7386 merge patch (its appendix A examples), the 64 KiB limit, what JSONB
can store."""

from __future__ import annotations

import copy
import json

import pytest

from server.core.errors import FieldViolation
from server.game_settings.rules import (
    MAX_DOCUMENT_BYTES,
    document_size,
    merge_patch,
    size_violation,
    storable,
)

# RFC 7386 Appendix A: (original, patch, result), verbatim.
RFC_7386_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC_7386_EXAMPLES)
def test_merge_patch_matches_the_rfc_7386_appendix(original, patch, result):
    assert merge_patch(original, patch) == result


def test_merge_patch_merges_nested_objects_and_deletes_with_null():
    stored = {"graphics": {"quality": "high", "vsync": True, "fov": 90}, "sound": {"music": 0.5}}
    patch = {"graphics": {"quality": "ultra", "vsync": None}, "controls": {"invertY": True}}

    assert merge_patch(stored, patch) == {
        "graphics": {"quality": "ultra", "fov": 90},
        "sound": {"music": 0.5},
        "controls": {"invertY": True},
    }


def test_merge_patch_leaves_its_arguments_untouched():
    stored = {"graphics": {"quality": "high", "vsync": True}}
    patch = {"graphics": {"vsync": None, "hdr": {"on": True}}}
    before = copy.deepcopy((stored, patch))

    merged = merge_patch(stored, patch)
    merged["graphics"]["hdr"]["on"] = False

    assert (stored, patch) == before


def test_size_counts_compact_utf8_json():
    document = {"name": "ü", "list": [1, 2]}
    assert document_size(document) == len('{"name":"ü","list":[1,2]}'.encode())


def test_a_document_of_exactly_64_kib_is_allowed_one_byte_more_is_not():
    overhead = document_size({"k": ""})
    exact = {"k": "x" * (MAX_DOCUMENT_BYTES - overhead)}
    over = {"k": "x" * (MAX_DOCUMENT_BYTES - overhead + 1)}

    assert document_size(exact) == MAX_DOCUMENT_BYTES
    assert size_violation(exact, "settings_payload") is None
    problem = size_violation(over, "settings_payload")
    assert problem is not None
    assert problem.field == "settings_payload"
    assert str(MAX_DOCUMENT_BYTES + 1) in problem.description


def test_storable_turns_integral_doubles_back_into_integers():
    value, problems = storable({"fov": 90.0, "gamma": 2.2, "big": 2.0**60, "list": [1.0, {"n": -3.0}]}, "p")

    assert problems == []
    assert value == {"fov": 90, "gamma": 2.2, "big": 2.0**60, "list": [1, {"n": -3}]}
    assert (
        json.dumps(value) == '{"fov": 90, "gamma": 2.2, "big": 1.152921504606847e+18, "list": [1, {"n": -3}]}'
    )


def test_storable_names_every_number_jsonb_cannot_hold():
    _, problems = storable(
        {"nan": float("nan"), "deep": {"inf": [float("-inf")]}, "ok": "x", "n": 1.5}, "settings_payload"
    )

    assert problems == [
        FieldViolation("settings_payload.nan", "numbers must be finite"),
        FieldViolation("settings_payload.deep.inf[0]", "numbers must be finite"),
    ]
