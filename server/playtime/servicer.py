"""PlaytimeTrackerService transport: validate, map proto ⇄ domain, call a use case. Nothing else."""

from __future__ import annotations

from google.protobuf import empty_pb2

from library.v1 import playtime_service_pb2 as pb
from library.v1 import playtime_service_pb2_grpc
from server.core.auth import current_user_id
from server.core.deps import Deps
from server.core.protoconv import timestamp
from server.core.validation import Validator
from server.playtime import rules
from server.playtime.live import server_now
from server.playtime.use_cases import OfflineSession, Playtime, ProductPlaytime

DEVICE_ID_MAX_LEN = 128
MAX_OFFLINE_SESSIONS = 100
MAX_STATS_PRODUCTS = 200
_EMPTY = empty_pb2.Empty()
_Result = pb.OfflineSessionResult


def _stats_pb(item: ProductPlaytime, *, last_two_weeks: bool) -> pb.ProductPlaytimeStats:
    stats = item.stats
    return pb.ProductPlaytimeStats(
        product_id=str(item.product_id),
        total_playtime_seconds=stats.total_seconds,
        last_two_weeks_seconds=stats.last_two_weeks_seconds,
        period_playtime_seconds=stats.period_seconds(last_two_weeks),
        device_totals=[pb.DevicePlaytime(device_id=d, playtime_seconds=s) for d, s in stats.device_seconds],
        last_played_at=timestamp(stats.last_played_at),
    )


class PlaytimeTrackerServiceServicer(playtime_service_pb2_grpc.PlaytimeTrackerServiceServicer):
    def __init__(self, deps: Deps):
        self._deps = deps
        self._playtime = Playtime(deps)

    async def StartPlaytimeSession(self, request: pb.StartPlaytimeSessionRequest, context):
        user_id = current_user_id()
        v = Validator()
        product_id = v.uuid("product_id", request.product_id)
        device_id = v.text("device_id", request.device_id, max_len=DEVICE_ID_MAX_LEN, required=True)
        client_session_id = v.uuid("client_session_id", request.client_session_id, required=False)
        v.check()
        started = await self._playtime.start(user_id, product_id, device_id, client_session_id)
        return pb.StartPlaytimeSessionResponse(
            session_id=str(started.session_id),
            heartbeat_interval_seconds=self._deps.settings.playtime_heartbeat_interval_seconds,
            started_at=timestamp(started.started_at),
            resumed=started.resumed,
            client_session_id=str(started.client_session_id or ""),
        )

    async def RecordPlaytimeHeartbeat(self, request: pb.RecordPlaytimeHeartbeatRequest, context):
        user_id = current_user_id()
        v = Validator()
        product_id = v.uuid("product_id", request.product_id)
        session_id = v.uuid("session_id", request.session_id)
        if request.HasField("current_timestamp"):
            v.timestamp("current_timestamp", request.current_timestamp, now=server_now(self._deps.clock))
        v.check()
        await self._playtime.heartbeat(user_id, session_id, product_id)
        return _EMPTY

    async def EndPlaytimeSession(self, request: pb.EndPlaytimeSessionRequest, context):
        user_id = current_user_id()
        v = Validator()
        product_id = v.uuid("product_id", request.product_id)
        session_id = v.uuid("session_id", request.session_id)
        v.check()
        ended = await self._playtime.end(user_id, session_id, product_id)
        return pb.EndPlaytimeSessionResponse(
            session_id=str(ended.session_id),
            credited_duration_seconds=ended.credited_seconds,
            total_playtime_seconds=ended.total_seconds,
            last_two_weeks_seconds=ended.last_two_weeks_seconds,
            started_at=timestamp(ended.started_at),
            ended_at=timestamp(ended.ended_at),
            last_played_at=timestamp(ended.last_played_at),
        )

    async def RecordOfflineSessions(self, request: pb.RecordOfflineSessionsRequest, context):
        user_id = current_user_id()
        v = Validator()
        if not request.sessions:
            v.fail("sessions", "is required")
        elif len(request.sessions) > MAX_OFFLINE_SESSIONS:
            v.fail("sessions", f"at most {MAX_OFFLINE_SESSIONS} sessions")
        sessions: list[OfflineSession] = []
        for i, s in enumerate(request.sessions if len(request.sessions) <= MAX_OFFLINE_SESSIONS else ()):
            field = f"sessions[{i}]"
            client_session_id = v.uuid(f"{field}.client_session_id", s.client_session_id)
            product_id = v.uuid(f"{field}.product_id", s.product_id)
            device_id = v.text(f"{field}.device_id", s.device_id, max_len=DEVICE_ID_MAX_LEN, required=True)
            # A future time rejects that session alone (IN_FUTURE), not the whole call.
            start = v.timestamp(f"{field}.start_time", s.start_time, allow_future=True)
            end = v.timestamp(f"{field}.end_time", s.end_time, allow_future=True)
            if client_session_id and product_id and start and end:
                sessions.append(
                    OfflineSession(client_session_id, product_id, device_id, rules.Interval(start, end))
                )
        v.check()
        results, stats = await self._playtime.record_offline(user_id, sessions)
        return pb.RecordOfflineSessionsResponse(
            results=[
                _Result(
                    client_session_id=str(r.client_session_id),
                    product_id=str(r.product_id),
                    outcome=_Result.Outcome.Value(r.outcome),
                    rejection_reason=_Result.RejectionReason.Value(r.rejection.value) if r.rejection else 0,
                    credited_seconds=r.credited_seconds,
                )
                for r in results
            ],
            stats=[_stats_pb(s, last_two_weeks=False) for s in stats],
        )

    async def GetPlaytimeStats(self, request: pb.GetPlaytimeStatsRequest, context):
        user_id = current_user_id()
        v = Validator()
        product_ids = v.uuids("product_ids", request.product_ids, max_items=MAX_STATS_PRODUCTS)
        period = v.enum("period", request.period, set(pb.GetPlaytimeStatsRequest.Period.values()))
        v.check()
        last_two_weeks = period == pb.GetPlaytimeStatsRequest.LAST_2_WEEKS
        stats, computed_at = await self._playtime.stats(user_id, product_ids, last_two_weeks=last_two_weeks)
        return pb.GetPlaytimeStatsResponse(
            stats=[_stats_pb(s, last_two_weeks=last_two_weeks) for s in stats],
            computed_at=timestamp(computed_at),
        )
