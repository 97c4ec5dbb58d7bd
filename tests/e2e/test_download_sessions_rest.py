"""Download sessions through Envoy, as the launchers call them: REST (proto3 JSON) for the Flutter apps and
native gRPC for game clients, against the session's server; the status changes observed on Kafka and in
the user's notification stream. Envoy is at 127.0.0.1:$ENVOY_PORT."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid

import grpc
import pytest
from websockets.asyncio.client import connect

from download.v1 import download_service_pb2 as pb
from download.v1 import download_service_pb2_grpc
from gateway.app import Gateway
from scripts.devtokens import mint
from server.core.auth import TokenVerifier
from server.core.events.cloudevents import DOWNLOAD_EVENTS_TOPIC
from server.core.uow import notification_stream
from tests.support.auth import user_metadata
from tests.support.grpc_errors import failure
from tests.support.kafka import TopicReader, about, assert_cloud_event
from tests.support.ownership import grant
from tests.support.rest import RestClient, error_reason, violations
from tests.support.versions import publish

BASE = "/api/v1/download-client/downloads"
ENVOY_GRPC = f"127.0.0.1:{os.environ.get('ENVOY_PORT', '8080')}"
STATUS_CHANGED = "com.platform.download.session.status.changed.v1"


async def test_a_download_over_rest_start_pause_resume_progress_complete(http, sessions, settings, redis):
    me = RestClient(http, uuid.uuid4())
    product = uuid.uuid4()
    await grant(sessions, me.user, product)
    version = await publish(sessions, product, {"game.bin": [b"g" * 8000], "readme.txt": [b"r" * 100]})

    status, started = await me.call(
        "POST", BASE, json={"productId": str(product), "installationPath": "C:/Games/X", "priority": 20}
    )
    assert status == 200, started
    session = started["download"]
    assert session["status"] == "DOWNLOADING" and session["branch"] == "public"
    assert int(session["totalSizeBytes"]) == version.download_bytes and session["priority"] == 20
    download = session["downloadId"]

    status, paused = await me.call("POST", f"{BASE}/{download}/pause", json={})
    assert (status, paused["download"]["status"]) == (200, "PAUSED"), paused
    status, body = await me.call("POST", f"{BASE}/{download}/pause", json={})
    assert (status, error_reason(body)) == (400, "INVALID_STATE_TRANSITION")
    status, resumed = await me.call(
        "POST", f"{BASE}/{download}/resume", json={"requestId": str(uuid.uuid4())}
    )
    assert (status, resumed["download"]["status"]) == (200, "DOWNLOADING"), resumed

    status, progress = await me.call("POST", f"{BASE}/{download}/progress", json={"downloadedBytes": "1000"})
    assert (status, progress["status"]) == (200, "DOWNLOADING"), progress
    status, body = await me.call("POST", f"{BASE}/{download}/progress", json={"downloadedBytes": "-5"})
    assert (status, error_reason(body), violations(body)) == (400, "VALIDATION_FAILED", ["downloaded_bytes"])
    status, body = await me.call("POST", f"{BASE}/{download}/reprioritize", json={"priority": 101})
    assert (status, error_reason(body), violations(body)) == (400, "VALIDATION_FAILED", ["priority"])

    status, got = await me.call("GET", f"{BASE}/{download}")
    assert status == 200 and int(got["download"]["downloadedBytes"]) == 1000
    status, listed = await me.call("GET", BASE, params={"status": "DOWNLOADING"})
    assert status == 200 and [d["downloadId"] for d in listed["downloads"]] == [download]

    status, done = await me.call(
        "POST",
        f"{BASE}/{download}/progress",
        json={
            "downloadedBytes": str(version.download_bytes),
            "status": "COMPLETED",
            "files": [
                {"path": "game.bin", "status": "COMPLETED"},
                {"path": "readme.txt", "status": "COMPLETED"},
            ],
        },
    )
    assert (status, done["status"], done["progressPercentage"]) == (200, "COMPLETED", 100), done
    status, body = await me.call("POST", f"{BASE}/{download}/cancel", json={})
    assert (status, error_reason(body)) == (400, "INVALID_STATE_TRANSITION")

    async with TopicReader(settings.kafka_bootstrap_servers, DOWNLOAD_EVENTS_TOPIC) as reader:
        events = await reader.wait_for(about(me.user, STATUS_CHANGED), count=4)
    for event in events:
        assert_cloud_event(event)
        assert event["subject"] == str(me.user)
    assert [(e["data"]["previousStatus"], e["data"]["newStatus"]) for e in events] == [
        (None, "downloading"),
        ("downloading", "paused"),
        ("paused", "downloading"),
        ("downloading", "completed"),
    ]
    entries = await redis.xrange(notification_stream(me.user))
    kinds = [f[b"type"].decode() for _, f in entries]
    assert kinds.count("downloadStatusChanged") == 4 and "downloadProgress" in kinds
    first_progress = next(json.loads(f[b"payload"]) for _, f in entries if f[b"type"] == b"downloadProgress")
    assert first_progress["downloadId"] == download and first_progress["downloadedBytes"] == 1000


async def test_another_users_download_is_not_found_over_rest(http, sessions):
    alice, bob = RestClient(http, uuid.uuid4()), RestClient(http, uuid.uuid4())
    product = uuid.uuid4()
    await grant(sessions, alice.user, product)
    await publish(sessions, product, {"a": [b"a" * 10]})
    status, started = await alice.call(
        "POST", BASE, json={"productId": str(product), "installationPath": "/g"}
    )
    assert status == 200, started
    download = started["download"]["downloadId"]
    for method, path, body in (
        ("GET", f"{BASE}/{download}", None),
        ("POST", f"{BASE}/{download}/cancel", {}),
        ("POST", f"{BASE}/{download}/progress", {"downloadedBytes": "1"}),
    ):
        status, reply = await bob.call(method, path, json=body)
        assert (status, error_reason(reply)) == (404, "DOWNLOAD_NOT_FOUND"), (path, reply)
    status, listed = await bob.call("GET", BASE)
    assert status == 200 and listed.get("downloads", []) == [] and listed["totalSize"] == 0
    status, reply = await bob.call("POST", BASE, json={"productId": str(product), "installationPath": "/g"})
    assert (status, error_reason(reply)) == (403, "PRODUCT_ACCESS_DENIED")


async def test_native_grpc_through_envoy_queues_and_cancels(sessions):
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    await publish(sessions, product, {"a": [b"a" * 10]})
    md = user_metadata(user)
    async with grpc.aio.insecure_channel(ENVOY_GRPC) as channel:
        stub = download_service_pb2_grpc.DownloadServiceStub(channel)
        started = await stub.StartDownload(
            pb.StartDownloadRequest(product_id=str(product), installation_path="/g", start_now=True),
            metadata=md,
        )
        assert started.download.status == pb.DownloadSession.DOWNLOADING and started.download.start_now
        cancelled = await stub.CancelDownload(
            pb.CancelDownloadRequest(download_id=started.download.download_id), metadata=md
        )
        assert cancelled.download.status == pb.DownloadSession.CANCELLED
        code, reason, _ = await failure(
            stub.GetDownload(pb.GetDownloadRequest(download_id=str(uuid.uuid4())), metadata=md)
        )
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "DOWNLOAD_NOT_FOUND")


@pytest.fixture
async def relay(settings, redis):
    """The WebSocket relay Envoy routes /api/v1/ws/* to (127.0.0.1:$WS_PORT), unless one runs already."""
    with socket.socket() as probe:
        running = probe.connect_ex(("127.0.0.1", settings.ws_port)) == 0
    if running:
        yield
        return
    gateway = Gateway(settings, TokenVerifier.from_settings(settings), redis)
    await gateway.start(host="127.0.0.1", port=settings.ws_port)
    yield
    await gateway.stop(grace=2)


async def test_the_download_websocket_carries_status_changes_and_progress(relay, http, sessions):
    me = RestClient(http, uuid.uuid4())
    product = uuid.uuid4()
    await grant(sessions, me.user, product)
    await publish(sessions, product, {"a": [b"a" * 4000]})
    url = (
        f"ws://127.0.0.1:{os.environ.get('ENVOY_PORT', '8080')}/api/v1/ws/download?token={mint(str(me.user))}"
    )
    async with connect(url, proxy=None, open_timeout=5) as ws:
        status, started = await me.call(
            "POST", BASE, json={"productId": str(product), "installationPath": "/g"}
        )
        assert status == 200, started
        download = started["download"]["downloadId"]
        status, _ = await me.call("POST", f"{BASE}/{download}/progress", json={"downloadedBytes": "500"})
        assert status == 200
        frames = []
        while {f["type"] for f in frames} != {"downloadStatusChanged", "downloadProgress"}:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    by_type = {f["type"]: f["payload"] for f in frames}
    assert by_type["downloadStatusChanged"]["downloadSessionId"] == download
    assert by_type["downloadStatusChanged"]["newStatus"] == "downloading"
    assert by_type["downloadProgress"]["downloadId"] == download
    assert by_type["downloadProgress"]["downloadedBytes"] == 500
