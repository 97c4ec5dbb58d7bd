"""The WebSocket message protocol of the notification relay (SPEC §8): pure (de)serialisation, no I/O.

Every frame is a JSON text message `{"type", "id", "payload"}`.

Server → client: a notification (`id` = its Redis stream entry id, which orders and identifies it), `pong`
(answering `ping`, echoing the ping's id) and `error` (`payload: {"code", "message"}`, `id` = the offending
message's id when it had one, else null).
Client → server: `ack` (`id` = a notification id), `ping` (optional id), `resume` (`payload: {"lastId"}` —
replay everything retained after that id, then continue live).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

LIBRARY_TYPES = frozenset(
    {
        "achievementUnlocked",
        "cloudSaveConflict",
        "cloudSaveSynced",
        "wishlistGameOnSale",
        "gameSettingsUpdated",
    }
)
DOWNLOAD_TYPES = frozenset({"downloadProgress", "downloadStatusChanged", "downloadSettingsUpdated"})

# Path (without query string) → the channel it serves; the alias comes from the seed (§3.3).
ROUTES: dict[str, str] = {
    "/api/v1/ws/library": "library",
    "/ws/library/notifications": "library",
    "/api/v1/ws/download": "download",
}
CHANNEL_TYPES: dict[str, frozenset[str]] = {"library": LIBRARY_TYPES, "download": DOWNLOAD_TYPES}

VALIDATION_FAILED = "VALIDATION_FAILED"
MAX_CLIENT_ID_LENGTH = 128

_STREAM_ID = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")


def channel_for_path(path: str) -> str | None:
    """The channel served at a request path (query string already removed), or None for unknown paths."""
    if len(path) > 1:
        path = path.rstrip("/")
    return ROUTES.get(path)


StreamId = tuple[int, int]


def parse_stream_id(text: str) -> StreamId | None:
    """`"1700000000000-3"` → (1700000000000, 3); a bare `"123"` means `"123-0"`; None if malformed."""
    match = _STREAM_ID.match(text)
    if match is None:
        return None
    ms, seq = int(match.group(1)), int(match.group(2) or 0)
    if ms >= 2**64 or seq >= 2**64:
        return None
    return ms, seq


def format_stream_id(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


# ---- server → client ---------------------------------------------------------------------------------


def encode_notification(entry_id: str, message_type: str, payload: Any) -> str:
    return orjson.dumps({"type": message_type, "id": entry_id, "payload": payload}).decode()


def encode_pong(ping_id: str | None) -> str:
    return orjson.dumps({"type": "pong", "id": ping_id, "payload": {}}).decode()


def encode_error(message: str, *, message_id: str | None = None, code: str = VALIDATION_FAILED) -> str:
    return orjson.dumps(
        {"type": "error", "id": message_id, "payload": {"code": code, "message": message}}
    ).decode()


def decode_entry(fields: dict[bytes, bytes]) -> tuple[str, Any] | None:
    """A stream entry written by the outbox relay (`type`, `payload` = JSON) → (type, payload); None if the
    entry is not a well-formed notification (it is skipped, never forwarded half-parsed)."""
    raw_type, raw_payload = fields.get(b"type"), fields.get(b"payload")
    if not raw_type or raw_payload is None:
        return None
    try:
        return raw_type.decode(), orjson.loads(raw_payload)
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        return None


# ---- client → server ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    id: str


@dataclass(frozen=True, slots=True)
class Ping:
    id: str | None


@dataclass(frozen=True, slots=True)
class Resume:
    last_id: StreamId
    id: str | None


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """A message the gateway answers with an `error` frame (the connection stays open)."""

    message: str
    id: str | None = None

    def encode(self) -> str:
        return encode_error(self.message, message_id=self.id)


ClientMessage = Ack | Ping | Resume


def parse_client_message(data: str | bytes) -> ClientMessage | ProtocolError:
    if isinstance(data, bytes):
        return ProtocolError("binary frames are not supported; send JSON text frames")
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return ProtocolError("message is not valid JSON")
    if not isinstance(message, dict):
        return ProtocolError('message must be a JSON object {"type", "id", "payload"}')
    raw_id = message.get("id")
    if raw_id is not None and (not isinstance(raw_id, str) or len(raw_id) > MAX_CLIENT_ID_LENGTH):
        return ProtocolError(f"id must be a string of at most {MAX_CLIENT_ID_LENGTH} characters or null")
    message_id: str | None = raw_id
    message_type = message.get("type")
    if not isinstance(message_type, str):
        return ProtocolError("type is required and must be a string", message_id)
    payload = message.get("payload")
    if payload is not None and not isinstance(payload, dict):
        return ProtocolError("payload must be an object", message_id)
    if message_type == "ping":
        return Ping(message_id)
    if message_type == "ack":
        if message_id is None or parse_stream_id(message_id) is None:
            return ProtocolError("ack needs the id of a received notification", message_id)
        return Ack(message_id)
    if message_type == "resume":
        last_id = (payload or {}).get("lastId")
        parsed = parse_stream_id(last_id) if isinstance(last_id, str) else None
        if parsed is None:
            return ProtocolError(
                "resume needs payload.lastId, the id of the last notification seen", message_id
            )
        return Resume(parsed, message_id)
    shown = message_type if len(message_type) <= 64 else message_type[:64] + "…"
    return ProtocolError(f"unknown message type {shown!r}; expected ack, ping or resume", message_id)
