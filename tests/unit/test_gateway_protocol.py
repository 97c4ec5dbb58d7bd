"""The WebSocket relay's message protocol (SPEC §8): pure parsing and encoding, no I/O."""

from __future__ import annotations

import json

import pytest

from gateway import protocol
from gateway.protocol import Ack, Ping, ProtocolError, Resume


def test_paths_map_to_channels_and_unknown_paths_to_none():
    assert protocol.channel_for_path("/api/v1/ws/library") == "library"
    assert protocol.channel_for_path("/ws/library/notifications") == "library"
    assert protocol.channel_for_path("/api/v1/ws/library/") == "library"
    assert protocol.channel_for_path("/api/v1/ws/download") == "download"
    assert protocol.channel_for_path("/api/v1/ws/other") is None
    assert protocol.channel_for_path("/") is None


def test_each_channel_carries_only_its_server_types():
    assert protocol.CHANNEL_TYPES["library"] == {
        "achievementUnlocked",
        "cloudSaveConflict",
        "cloudSaveSynced",
        "wishlistGameOnSale",
        "gameSettingsUpdated",
    }
    assert protocol.CHANNEL_TYPES["download"] == {
        "downloadProgress",
        "downloadStatusChanged",
        "downloadSettingsUpdated",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700000000000-3", (1700000000000, 3)),
        ("0-0", (0, 0)),
        ("0", (0, 0)),
        ("42", (42, 0)),
        ("", None),
        ("-1", None),
        ("1-2-3", None),
        ("abc", None),
        ("1-", None),
        (" 1-0", None),
        (str(2**64) + "-0", None),
    ],
)
def test_stream_ids_parse_into_ordered_tuples(text, expected):
    assert protocol.parse_stream_id(text) == expected


def test_stream_ids_order_numerically_not_lexically():
    assert protocol.parse_stream_id("10-0") > protocol.parse_stream_id("9-5")
    assert protocol.parse_stream_id("5-10") > protocol.parse_stream_id("5-9")
    assert protocol.format_stream_id((5, 10)) == "5-10"


def test_notification_frame_has_type_id_payload():
    frame = json.loads(
        protocol.encode_notification("1-0", "achievementUnlocked", {"productId": "p", "achievementId": "a"})
    )
    assert frame == {
        "type": "achievementUnlocked",
        "id": "1-0",
        "payload": {"productId": "p", "achievementId": "a"},
    }


def test_pong_echoes_the_ping_id():
    assert json.loads(protocol.encode_pong("p1")) == {"type": "pong", "id": "p1", "payload": {}}
    assert json.loads(protocol.encode_pong(None)) == {"type": "pong", "id": None, "payload": {}}


def test_error_frame_echoes_the_message_id_and_carries_validation_failed_with_the_message():
    assert json.loads(protocol.encode_error("bad", message_id="x")) == {
        "type": "error",
        "id": "x",
        "payload": {"code": "VALIDATION_FAILED", "message": "bad"},
    }


def test_stream_entries_decode_and_malformed_ones_are_skipped():
    assert protocol.decode_entry({b"type": b"cloudSaveSynced", b"payload": b'{"slotName":"s1"}'}) == (
        "cloudSaveSynced",
        {"slotName": "s1"},
    )
    assert protocol.decode_entry({b"type": b"cloudSaveSynced"}) is None
    assert protocol.decode_entry({b"payload": b"{}"}) is None
    assert protocol.decode_entry({b"type": b"x", b"payload": b"{not json"}) is None
    assert protocol.decode_entry({b"type": b"\xff", b"payload": b"{}"}) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"type":"ping"}', Ping(None)),
        ('{"type":"ping","id":"p-1"}', Ping("p-1")),
        ('{"type":"ack","id":"1700000000000-0"}', Ack("1700000000000-0")),
        ('{"type":"resume","payload":{"lastId":"1700000000000-2"}}', Resume((1700000000000, 2), None)),
        ('{"type":"resume","id":"r1","payload":{"lastId":"0"}}', Resume((0, 0), "r1")),
    ],
)
def test_valid_client_messages_parse_into_their_commands(raw, expected):
    assert protocol.parse_client_message(raw) == expected


@pytest.mark.parametrize(
    ("raw", "error_id", "fragment"),
    [
        ("not json", None, "not valid JSON"),
        ("[1,2]", None, "JSON object"),
        ('"ping"', None, "JSON object"),
        ('{"id":"x"}', "x", "type is required"),
        ('{"type":7}', None, "type is required"),
        ('{"type":"subscribe","id":"s1"}', "s1", "unknown message type 'subscribe'"),
        ('{"type":"ping","id":5}', None, "id must be a string"),
        ('{"type":"ping","id":"' + "x" * 200 + '"}', None, "id must be a string"),
        ('{"type":"ping","payload":[]}', None, "payload must be an object"),
        ('{"type":"ack"}', None, "ack needs the id"),
        ('{"type":"ack","id":"nope"}', "nope", "ack needs the id"),
        ('{"type":"resume"}', None, "resume needs payload.lastId"),
        ('{"type":"resume","payload":{"lastId":3}}', None, "resume needs payload.lastId"),
        ('{"type":"resume","id":"r","payload":{"lastId":"x-y"}}', "r", "resume needs payload.lastId"),
        (b'{"type":"ping"}', None, "binary frames"),
    ],
)
def test_invalid_client_messages_become_validation_errors(raw, error_id, fragment):
    error = protocol.parse_client_message(raw)
    assert isinstance(error, ProtocolError)
    assert error.id == error_id
    assert fragment in error.message
    frame = json.loads(error.encode())
    assert frame["type"] == "error"
    assert frame["id"] == error_id
    assert frame["payload"]["code"] == "VALIDATION_FAILED"


def test_long_unknown_types_are_truncated_in_the_error():
    error = protocol.parse_client_message(json.dumps({"type": "z" * 1000}))
    assert isinstance(error, ProtocolError)
    assert len(error.message) < 200
