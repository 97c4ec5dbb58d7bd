"""REST through Envoy (JSON transcoding), as the Flutter apps call it: one user's client, and readers for the
rich status (ErrorInfo, BadRequest) Envoy renders into an error body's `details` (SPEC §4).
Envoy's address: 127.0.0.1:$ENVOY_PORT (default 8080)."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import aiohttp

from scripts.devtokens import mint

ENVOY = f"http://127.0.0.1:{os.environ.get('ENVOY_PORT', '8080')}"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


class RestClient:
    """One user's REST client; paths are absolute (`/api/v1/...`), as in the protos' http options."""

    def __init__(self, http: aiohttp.ClientSession, user: uuid.UUID):
        self.user = user
        self._http = http
        self._headers = {"Authorization": f"Bearer {mint(str(user))}"}

    async def call(self, method: str, path: str, *, json: Any = None, params: Any = None) -> tuple[int, dict]:
        """(HTTP status, JSON body); an empty body reads as `{}`, a non-JSON one as `{"unparsed": text}`."""
        async with self._http.request(
            method, ENVOY + path, json=json, params=params, headers=self._headers
        ) as response:
            return response.status, _parse(await response.text())


def _parse(text: str) -> dict:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {"unparsed": text}


def error_reason(body: dict) -> str:
    """The reason of the one ErrorInfo in an error body, whose domain must be ours."""
    [info] = [d for d in body.get("details", []) if d["@type"] == ERROR_INFO]
    assert info["domain"] == "library.platform"
    return info["reason"]


def violations(body: dict) -> list[str]:
    """The field names of an error body's BadRequest violations, in order (none: `[]`)."""
    return [
        v["field"] for d in body.get("details", []) if d["@type"] == BAD_REQUEST for v in d["fieldViolations"]
    ]
