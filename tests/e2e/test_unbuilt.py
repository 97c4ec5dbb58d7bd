"""A capability whose contract exists but whose behaviour is not built answers UNIMPLEMENTED (HTTP 501):
never fake data."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
import uuid

from scripts.devtokens import mint

ENVOY = f"http://127.0.0.1:{os.environ.get('ENVOY_PORT', '8080')}"


def _get(path: str, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(ENVOY + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_an_unbuilt_rpc_is_501_with_a_status_body(grpc_target):
    path = f"/api/v1/library/me/game-settings/{uuid.uuid4()}"
    status, body = await asyncio.to_thread(_get, path, mint(str(uuid.uuid4())))
    assert status == 501
    assert body["code"] == 12
    assert body["details"][0]["reason"] == "NOT_IMPLEMENTED"
