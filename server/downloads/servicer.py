"""DownloadService: one servicer composed of the capability's transport mixins (each maps its RPCs'
proto ⇄ domain and calls its use cases). The generated base answers UNIMPLEMENTED for anything else."""

from __future__ import annotations

from download.v1 import download_service_pb2_grpc
from server.core.deps import Deps
from server.downloads.content_servicer import ContentServicer
from server.downloads.session_servicer import SessionServicer
from server.downloads.settings_servicer import DownloadSettingsServicer


class DownloadServiceServicer(
    ContentServicer,
    SessionServicer,
    DownloadSettingsServicer,
    download_service_pb2_grpc.DownloadServiceServicer,
):
    def __init__(self, deps: Deps):
        self._deps = deps
        SessionServicer.__init__(self, deps)
