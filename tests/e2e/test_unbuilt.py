"""A capability whose contract exists but whose behaviour is not built answers UNIMPLEMENTED (HTTP 501):
never fake data."""

from __future__ import annotations

import uuid

from tests.support.rest import RestClient, error_reason


async def test_an_unbuilt_rpc_is_501_with_a_status_body(http):
    me = RestClient(http, uuid.uuid4())
    status, body = await me.call("GET", f"/api/v1/library/me/savegames/{uuid.uuid4()}")
    assert status == 501
    assert body["code"] == 12
    assert error_reason(body) == "NOT_IMPLEMENTED"
