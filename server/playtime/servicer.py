"""PlaytimeTrackerService transport: map proto ⇄ domain, call a use case. Nothing else.

The contract's field rules are enforced by the call pipeline; what is checked here needs the clock
(timestamps) or spans entries (comma-separated product ids)."""

from __future__ import annotations

import functools

from google.protobuf import empty_pb2

from library.v1 import playtime_service_pb2 as pb
from library.v1 import playtime_service_pb2_grpc
from server.core.auth import current_user_id, current_user_id_text
from server.core.deps import Deps
from server.core.protoconv import add_all, timestamp
from server.core.validation import Validator, parse_uuid
from server.playtime import rules
from server.playtime.live import server_now
from server.playtime.use_cases import OfflineSession, Playtime, ProductPlaytime

MAX_STATS_PRODUCTS = 200
_EMPTY = empty_pb2.Empty()
_Result = pb.OfflineSessionResult


def _stats_fields(item: ProductPlaytime, *, last_two_weeks: bool) -> dict:
    stats = item.stats
    if stats is rules.UNPLAYED:  # most products of a library: every other field is zero
        return {"product_id": item.product_id}
    return {
        "product_id": item.product_id,
        "total_playtime_seconds": stats.total_seconds,
        "last_two_weeks_seconds": stats.last_two_weeks_seconds,
        "period_playtime_seconds": stats.period_seconds(last_two_weeks),
        "device_totals": [{"device_id": d, "playtime_seconds": s} for d, s in stats.device_seconds],
        "last_played_at": timestamp(stats.last_played_at),
    }


class PlaytimeTrackerServiceServicer(playtime_service_pb2_grpc.PlaytimeTrackerServiceServicer):
    def __init__(self, deps: Deps):
        self._deps = deps
        self._playtime = Playtime(deps)

    async def StartPlaytimeSession(self, request: pb.StartPlaytimeSessionRequest, context):
        user_id = current_user_id()
        started = await self._playtime.start(
            user_id, parse_uuid(request.product_id), request.device_id, parse_uuid(request.client_session_id)
        )
        return pb.StartPlaytimeSessionResponse(
            session_id=str(started.session_id),
            heartbeat_interval_seconds=self._deps.settings.playtime_heartbeat_interval_seconds,
            started_at=timestamp(started.started_at),
            resumed=started.resumed,
            client_session_id=str(started.client_session_id or ""),
        )

    async def RecordPlaytimeHeartbeat(self, request: pb.RecordPlaytimeHeartbeatRequest, context):
        user_id = current_user_id_text()
        if request.HasField("current_timestamp"):
            v = Validator()
            v.timestamp("current_timestamp", request.current_timestamp, now=server_now(self._deps.clock))
            v.check()
        # The contract checked both ids (string.uuid): lowercased, they are the canonical text Redis holds,
        # as the user's is (no UUID made and printed again per heartbeat).
        await self._playtime.heartbeat(user_id, request.session_id.lower(), request.product_id.lower())
        return _EMPTY

    async def EndPlaytimeSession(self, request: pb.EndPlaytimeSessionRequest, context):
        user_id = current_user_id()
        session_id, product_id = parse_uuid(request.session_id), parse_uuid(request.product_id)
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
        sessions: list[OfflineSession] = []
        for i, s in enumerate(request.sessions):
            # A future time rejects that session alone (IN_FUTURE), not the whole call.
            start = v.timestamp(f"sessions[{i}].start_time", s.start_time, allow_future=True)
            end = v.timestamp(f"sessions[{i}].end_time", s.end_time, allow_future=True)
            if start and end:
                interval = rules.Interval(start, end)
                client_session_id, product_id = parse_uuid(s.client_session_id), parse_uuid(s.product_id)
                sessions.append(OfflineSession(client_session_id, product_id, s.device_id, interval))
        v.check()
        results, stats = await self._playtime.record_offline(user_id, sessions)
        response = pb.RecordOfflineSessionsResponse(
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
        )
        add_all(response.stats, stats, functools.partial(_stats_fields, last_two_weeks=False))
        return response

    async def GetPlaytimeStats(self, request: pb.GetPlaytimeStatsRequest, context):
        user_id = current_user_id()
        v = Validator()
        product_ids = v.uuids("product_ids", request.product_ids, max_items=MAX_STATS_PRODUCTS)
        v.check()
        last_two_weeks = request.period == pb.GetPlaytimeStatsRequest.LAST_2_WEEKS
        stats, computed_at = await self._playtime.stats(user_id, product_ids, last_two_weeks=last_two_weeks)
        response = pb.GetPlaytimeStatsResponse(computed_at=timestamp(computed_at))
        add_all(response.stats, stats, functools.partial(_stats_fields, last_two_weeks=last_two_weeks))
        return response
