"""Per-user rate limits (SPEC §9) against the real Redis: the GCRA budget under a controlled clock, shared
by every process; the heartbeat's limit inside its own script; and, on a server process and an Envoy of
their own with tight limits, RESOURCE_EXHAUSTED RATE_LIMITED with RetryInfo over gRPC and 429 with
Retry-After over REST."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2

from download.v1 import download_service_pb2 as dpb
from download.v1 import download_service_pb2_grpc
from library.v1 import library_service_pb2, library_service_pb2_grpc, playtime_service_pb2_grpc
from library.v1 import playtime_service_pb2 as pb
from server.core.config import ConfigurationError, Settings
from server.core.deps import Deps
from server.core.errors import RateLimited
from server.core.rate_limit import RateLimit, RateLimiter, counts_own_limit, parse_limits
from server.playtime.live import LiveRecord, heartbeat_limit, live_sessions
from server.playtime.rules import LiveSession
from tests.support.auth import user_metadata
from tests.support.grpc_errors import error_details, failure, rich_status
from tests.support.ownership import grant
from tests.support.processes import PrivateEnvoy, free_port, python_server, wait_for_port, wait_serving
from tests.support.versions import publish

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _retry_delay(error: grpc.aio.AioRpcError) -> int:
    for detail in rich_status(error).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds
    raise AssertionError("no RetryInfo")


# ---------------------------------------------------------------- the limiter


async def test_a_user_gets_count_calls_per_period_then_waits_for_the_next_slot(redis):
    clock = FakeClock()
    method = f"/test.v1.Limited{uuid.uuid4().hex}/Write"
    limit = RateLimit(count=3, period_seconds=60)
    limiter = RateLimiter(redis, {method.rsplit(".", 1)[1]: limit}, clock)
    other_process = RateLimiter(redis, {method.rsplit(".", 1)[1]: limit}, clock)
    user, neighbour = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        await limiter.acquire(method, user, limit)
        await other_process.acquire(method, user, limit)  # one budget across processes
        await limiter.acquire(method, user, limit)
        with pytest.raises(RateLimited) as limited:
            await other_process.acquire(method, user, limit)
        assert limited.value.retry_after_seconds == 20  # one slot per 60/3 s
        await limiter.acquire(method, neighbour, limit)  # each user has a budget of their own
        clock.now += timedelta(seconds=19)
        with pytest.raises(RateLimited) as limited:
            await limiter.acquire(method, user, limit)
        assert limited.value.retry_after_seconds == 1
        clock.now += timedelta(seconds=1)
        await limiter.acquire(method, user, limit)
        with pytest.raises(RateLimited):
            await limiter.acquire(method, user, limit)  # the refused calls did not count
        clock.now += timedelta(seconds=60)  # a full period later the whole burst is back
        for _ in range(3):
            await limiter.acquire(method, user, limit)
    finally:
        limiter.close()
        other_process.close()


def test_rate_limits_are_configured_per_method_with_the_write_heavy_rpcs_by_default():
    limits = parse_limits(Settings().rate_limits)
    assert {
        "AchievementService/UpdateAchievementProgress",
        "PlaytimeTrackerService/RecordOfflineSessions",
        "CloudSaveService/RequestSaveGameUploadURL",
        "DownloadService/ReportDownloadProgress",
    } <= set(limits)
    assert parse_limits("A/B=5/10") == {"A/B": RateLimit(5, 10.0)}
    for bad in ("A/B=5", "AB=5/10", "A/B=0/10", "A/B=x/10", "A/B=5/0"):
        with pytest.raises(ConfigurationError):
            parse_limits(bad)


async def test_only_methods_with_a_limit_are_wrapped(redis):
    limiter = RateLimiter(redis, {"Svc/Limited": RateLimit(1, 60)})

    async def behavior(request, ctx):
        return request

    @counts_own_limit
    async def counted_inside(request, ctx):  # e.g. in its own Redis script: not counted a second time
        return request

    assert limiter.guard("/pkg.v1.Svc/Free", behavior) is behavior
    assert limiter.guard("/pkg.v1.Svc/Limited", behavior) is not behavior
    assert limiter.guard("/pkg.v1.Svc/Limited", counted_inside) is counted_inside
    limiter.close()


# ---------------------------------------------------------------- the heartbeat's limit


async def test_heartbeats_faster_than_their_interval_allows_are_refused_and_record_nothing(
    settings: Settings, redis, sessions
):
    deps = Deps(dataclasses.replace(settings, playtime_heartbeat_interval_seconds=60), None, redis, None)
    limit = heartbeat_limit(deps)
    assert limit == RateLimit(3, 90)  # defaults: 2 per interval sustained, bursts of 3
    live = live_sessions(deps)
    session, user, product = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await live.open(session, LiveRecord(user, product, "pc", LiveSession.started(T0)))
    ms = timedelta(milliseconds=1)
    for i in range(3):
        await live.heartbeat(session, user, product, T0 + i * ms)
    with pytest.raises(RateLimited) as limited:
        await live.heartbeat(session, user, product, T0 + 3 * ms)
    assert limited.value.retry_after_seconds == 30
    assert (await live.get(session)).state.last_heartbeat == T0 + 2 * ms  # the refused one left no trace
    for minute in range(1, 6):  # a client on the interval is never limited
        await live.heartbeat(session, user, product, T0 + timedelta(seconds=60 * minute))
    assert (await live.get(session)).state.last_heartbeat == T0 + timedelta(minutes=5)


# ---------------------------------------------------------------- over gRPC and through Envoy


@pytest.fixture(scope="module")
async def limited_stack(tmp_path_factory):
    """A server process with tight limits (ListLibraryItems and ReportDownloadProgress: 2 per hour;
    heartbeats: bursts of 2) and an Envoy in front of it."""
    port = free_port()
    with python_server(
        "test-server-rate-limits.log",
        GRPC_PORT=str(port),
        METRICS_PORT=str(free_port()),
        WORKERS_ENABLED="0",
        RATE_LIMITS="LibraryService/ListLibraryItems=2/3600,DownloadService/ReportDownloadProgress=2/3600",
        PLAYTIME_HEARTBEAT_BURST="2",
    ):
        target = f"127.0.0.1:{port}"
        edge = PrivateEnvoy(tmp_path_factory.mktemp("edge"), GRPC_UPSTREAMS=target)
        edge.start()
        try:
            await wait_serving(target)
            await wait_for_port(edge.port)
            yield target, edge
        finally:
            edge.stop()


async def test_over_the_limit_is_resource_exhausted_with_retry_info_over_grpc(limited_stack):
    target, _ = limited_stack
    user = uuid.uuid4()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = library_service_pb2_grpc.LibraryServiceStub(channel)
        request = library_service_pb2.ListLibraryItemsRequest(page_size=1)
        for _ in range(2):
            await stub.ListLibraryItems(request, metadata=user_metadata(user), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListLibraryItems(request, metadata=user_metadata(user), timeout=10)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_details(raised.value)[0] == "RATE_LIMITED"
        assert 1700 <= _retry_delay(raised.value) <= 1800  # the next slot: half an hour
        # Another user is not held back by this one.
        await stub.ListLibraryItems(request, metadata=user_metadata(uuid.uuid4()), timeout=10)


async def test_progress_reports_over_the_limit_are_resource_exhausted_whatever_they_carry(
    limited_stack, sessions
):
    """The report counts its call inside its own Redis script; the budget is the pipeline's, per user."""
    target, _ = limited_stack
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    await publish(sessions, product, {"game.exe": [b"x" * 5000]})
    async with grpc.aio.insecure_channel(target) as channel:
        stub = download_service_pb2_grpc.DownloadServiceStub(channel)
        md = user_metadata(user)
        started = await stub.StartDownload(
            dpb.StartDownloadRequest(product_id=str(product), installation_path="/g"), metadata=md, timeout=10
        )
        download_id = started.download.download_id
        for n in (1, 2):
            report = dpb.ReportDownloadProgressRequest(download_id=download_id, downloaded_bytes=n)
            await stub.ReportDownloadProgress(report, metadata=md, timeout=10)
        done = dpb.DownloadFileReport(path="game.exe", status=dpb.DownloadFileReport.COMPLETED)
        for refused in (
            dpb.ReportDownloadProgressRequest(download_id=download_id, downloaded_bytes=3),
            dpb.ReportDownloadProgressRequest(download_id=download_id, downloaded_bytes=3, files=[done]),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.ReportDownloadProgress(refused, metadata=md, timeout=10)
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error_details(raised.value)[0] == "RATE_LIMITED"
            assert 1700 <= _retry_delay(raised.value) <= 1800
        got = await stub.GetDownload(dpb.GetDownloadRequest(download_id=download_id), metadata=md, timeout=10)
        assert got.download.downloaded_bytes == 2  # the refused reports recorded nothing


async def test_over_the_limit_is_429_with_retry_after_through_envoy(limited_stack):
    _, edge = limited_stack
    headers = dict(user_metadata(uuid.uuid4()))
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.get(f"{edge.url}/api/v1/library/me/items", headers=headers) as response:
                assert response.status == 200
        async with http.get(f"{edge.url}/api/v1/library/me/items", headers=headers) as response:
            assert response.status == 429
            assert 1700 <= int(response.headers["Retry-After"]) <= 1800
            assert not [h for h in response.headers if h.lower().startswith("grpc-")]
            body = json.loads(await response.text())
    assert body["code"] == 8
    reasons = [d["reason"] for d in body["details"] if d["@type"].endswith("ErrorInfo")]
    assert reasons == ["RATE_LIMITED"]
    assert any(d["@type"].endswith("google.rpc.RetryInfo") for d in body["details"])


async def test_rapid_heartbeats_are_limited_over_grpc_and_rest(limited_stack, owner):
    target, edge = limited_stack
    user, product = owner
    async with grpc.aio.insecure_channel(target) as channel:
        stub = playtime_service_pb2_grpc.PlaytimeTrackerServiceStub(channel)
        started = await stub.StartPlaytimeSession(
            pb.StartPlaytimeSessionRequest(product_id=str(product), device_id="pc"),
            metadata=user_metadata(user),
            timeout=10,
        )
        heartbeat = pb.RecordPlaytimeHeartbeatRequest(product_id=str(product), session_id=started.session_id)
        for _ in range(2):
            await stub.RecordPlaytimeHeartbeat(heartbeat, metadata=user_metadata(user), timeout=10)
        code, reason, _ = await failure(
            stub.RecordPlaytimeHeartbeat(heartbeat, metadata=user_metadata(user), timeout=10)
        )
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        resumed = await stub.StartPlaytimeSession(  # a start resuming the session is never refused
            pb.StartPlaytimeSessionRequest(product_id=str(product), device_id="pc"),
            metadata=user_metadata(user),
            timeout=10,
        )
        assert resumed.resumed and resumed.session_id == started.session_id
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{edge.url}/api/v1/library/me/playtime/sessions/heartbeat",
            json={"productId": str(product), "sessionId": started.session_id},
            headers=dict(user_metadata(user)),
        ) as response,
    ):
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
