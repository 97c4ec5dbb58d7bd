"""LibraryService transport: validate the request, map proto ⇄ domain, call a use case. Nothing else."""

from __future__ import annotations

from library.v1 import library_service_pb2_grpc
from server.core.deps import Deps


class LibraryServiceServicer(library_service_pb2_grpc.LibraryServiceServicer):
    def __init__(self, deps: Deps):
        self._deps = deps
