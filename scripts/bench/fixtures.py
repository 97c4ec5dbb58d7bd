"""What the benchmark measures and how it checks the answers.

`choose_rpc` prepares the measured call: RecordPlaytimeHeartbeat on an active play session of a bench user
who owns a bench product (granted with GrantEntitlements). When heartbeats fail, or with BENCH_RPC=fallback,
it measures an authenticated RPC that answers (GetDownloadSettings) instead, and says so.

h2load cannot see gRPC trailers, so answers are checked with a real gRPC client (one call per path) and, for
the whole load, with the service's own `grpc_server_handled_total{method,code}` counters.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from download.v1 import download_service_pb2
from library.v1 import (
    library_service_pb2,
    library_service_pb2_grpc,
    playtime_service_pb2,
    playtime_service_pb2_grpc,
)
from scripts.devtokens import mint

# Fixed ids: repeated runs reuse the same user, product and (while it is active) play session.
BENCH_USER = uuid.uuid5(uuid.NAMESPACE_URL, "https://library.platform/bench/user")
BENCH_PRODUCT = uuid.uuid5(uuid.NAMESPACE_URL, "https://library.platform/bench/product")
BENCH_DEVICE = "bench-device-1"

HEARTBEAT = "/library.v1.PlaytimeTrackerService/RecordPlaytimeHeartbeat"
FALLBACK = "/download.v1.DownloadService/GetDownloadSettings"


@dataclass
class RpcChoice:
    method: str  # gRPC path, e.g. /library.v1.PlaytimeTrackerService/RecordPlaytimeHeartbeat
    message: bytes  # serialized request
    expected_code: grpc.StatusCode
    rest_method: str
    rest_path: str
    rest_body: str | None
    expected_http: int
    is_heartbeat: bool
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.method.rsplit("/", 1)[-1]


def user_token() -> str:
    return mint(str(BENCH_USER), ttl=3 * 3600)


def service_token() -> str:
    return mint("service:bench", roles=("service",), ttl=3600)


def _md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def wait_serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def raw_call(target: str, method: str, message: bytes, token: str) -> tuple[grpc.StatusCode, str]:
    """One unary call with raw bytes (no stub): the status code and details the server answered."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            call(message, metadata=_md(token), timeout=10)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""


def rest_call(url: str, method: str, body: str | None, token: str) -> tuple[int, str]:
    data = body.encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _grant(target: str, notes: list[str]) -> bool:
    """Makes the bench user own the bench product. True when it worked."""
    with grpc.insecure_channel(target) as channel:
        stub = library_service_pb2_grpc.LibraryServiceStub(channel)
        request = library_service_pb2.GrantEntitlementsRequest(
            user_id=str(BENCH_USER),
            items=[
                library_service_pb2.EntitlementGrant(
                    product_id=str(BENCH_PRODUCT), acquisition_type=library_service_pb2.LibraryItem.PURCHASE
                )
            ],
        )
        try:
            stub.GrantEntitlements(request, metadata=_md(service_token()), timeout=10)
        except grpc.RpcError as exc:
            notes.append(f"could not grant the bench product: {exc.code().name}: {exc.details()}")
            return False
    notes.append("bench product granted with LibraryService.GrantEntitlements")
    return True


def libpq_url(database_url: str) -> str:
    return re.sub(r"^postgresql\+\w+://", "postgresql://", database_url)


def _heartbeat(target: str, notes: list[str]) -> RpcChoice | None:
    if not _grant(target, notes):
        return None
    token = user_token()
    with grpc.insecure_channel(target) as channel:
        stub = playtime_service_pb2_grpc.PlaytimeTrackerServiceStub(channel)
        try:
            reply = stub.StartPlaytimeSession(
                playtime_service_pb2.StartPlaytimeSessionRequest(
                    product_id=str(BENCH_PRODUCT), device_id=BENCH_DEVICE
                ),
                metadata=_md(token),
                timeout=10,
            )
        except grpc.RpcError as exc:
            notes.append(f"StartPlaytimeSession answered {exc.code().name}: {exc.details()}")
            return None
    notes.append(f"play session {reply.session_id} ({'resumed' if reply.resumed else 'started'})")
    request = playtime_service_pb2.RecordPlaytimeHeartbeatRequest(
        product_id=str(BENCH_PRODUCT), session_id=reply.session_id
    )
    message = request.SerializeToString()
    code, details = raw_call(target, HEARTBEAT, message, token)
    if code != grpc.StatusCode.OK:
        notes.append(f"RecordPlaytimeHeartbeat answered {code.name}: {details}")
        return None
    body = json.dumps({"productId": str(BENCH_PRODUCT), "sessionId": reply.session_id}, separators=(",", ":"))
    return RpcChoice(
        method=HEARTBEAT,
        message=message,
        expected_code=grpc.StatusCode.OK,
        rest_method="POST",
        rest_path="/api/v1/library/me/playtime/sessions/heartbeat",
        rest_body=body,
        expected_http=200,
        is_heartbeat=True,
        notes=notes,
    )


def choose_rpc(target: str) -> RpcChoice:
    notes: list[str] = []
    if os.environ.get("BENCH_RPC", "heartbeat") == "heartbeat":
        choice = _heartbeat(target, notes)
        if choice is not None:
            return choice
        notes.append("FALLBACK: heartbeats do not work yet; measuring GetDownloadSettings instead")
    message = download_service_pb2.GetDownloadSettingsRequest().SerializeToString()
    code, details = raw_call(target, FALLBACK, message, user_token())
    if code not in (grpc.StatusCode.OK, grpc.StatusCode.UNIMPLEMENTED):
        raise RuntimeError(f"fallback RPC {FALLBACK} answered {code.name}: {details}")
    notes.append(f"{FALLBACK} answers {code.name} (expected answer for this run)")
    return RpcChoice(
        method=FALLBACK,
        message=message,
        expected_code=code,
        rest_method="GET",
        rest_path="/api/v1/download-client/settings",
        rest_body=None,
        expected_http=200 if code == grpc.StatusCode.OK else 501,
        is_heartbeat=False,
        notes=notes,
    )


_SAMPLE = re.compile(r"^grpc_server_handled_total\{(?P<labels>[^}]*)\}\s+(?P<value>[0-9.e+]+)$", re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def handled_codes(metrics_port: int, method: str) -> dict[str, int]:
    """The service's per-code count of completed calls of `method` (Prometheus text format)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    codes: dict[str, int] = {}
    for m in _SAMPLE.finditer(text):
        labels = dict(_LABEL.findall(m.group("labels")))
        if labels.get("method") == method:
            codes[labels.get("code", "?")] = codes.get(labels.get("code", "?"), 0) + int(
                float(m.group("value"))
            )
    return codes


def unexpected_calls(codes: dict[str, int], expected: str, in_flight_at_end: int) -> int:
    """How many calls of a run (per-code counts from the service, all its processes) answered other than
    `expected`. CANCELLED calls up to what the load generator had in flight when its timed runs stopped
    (LoadResult.in_flight_at_end: it resets those streams or connections, through Envoy too, at most one
    call each) are the runs' end, not failures; more CANCELLED than that, or any other code, are counted."""
    other = sum(n for code, n in codes.items() if code not in (expected, "CANCELLED"))
    return other + max(0, codes.get("CANCELLED", 0) - in_flight_at_end)


def codes_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {code: after.get(code, 0) - before.get(code, 0) for code in set(before) | set(after)}
    return {code: n for code, n in sorted(delta.items()) if n}
