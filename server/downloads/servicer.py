"""DownloadService transport: the servicer is composed of one mixin per part of the service, each mapping
its RPCs proto ⇄ domain and calling its use cases (session_servicer.py: download sessions and the queue)."""

from __future__ import annotations

from download.v1 import download_service_pb2_grpc
from server.core.deps import Deps
from server.downloads.session_servicer import SessionServicer


class DownloadServiceServicer(SessionServicer, download_service_pb2_grpc.DownloadServiceServicer):
    def __init__(self, deps: Deps):
        SessionServicer.__init__(self, deps)
