"""PlaytimeTrackerService transport: validate, map proto ⇄ domain, call a use case. Nothing else."""

from __future__ import annotations

from library.v1 import playtime_service_pb2_grpc
from server.core.deps import Deps


class PlaytimeTrackerServiceServicer(playtime_service_pb2_grpc.PlaytimeTrackerServiceServicer):
    def __init__(self, deps: Deps):
        self._deps = deps
