"""The `downloads` command's pure parts: the order the queue is shown in, and download id prefixes."""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2

from client.cli.downloads import match_download, queue_order
from download.v1 import download_service_pb2 as pb

S = pb.DownloadSession


def _session(name: str, status: int, *, priority: int = 0, created: int = 0, updated: int = 0) -> S:
    return S(
        download_id=name,
        status=status,
        priority=priority,
        created_at=timestamp_pb2.Timestamp(seconds=created),
        updated_at=timestamp_pb2.Timestamp(seconds=updated),
    )


def test_the_queue_shows_running_then_waiting_in_start_order_then_paused_failed_and_finished_newest_first():
    sessions = [
        _session("done-old", S.COMPLETED, created=1, updated=10),
        _session("queued-low-old", S.QUEUED, priority=0, created=1),
        _session("paused", S.PAUSED, created=2),
        _session("queued-high", S.QUEUED, priority=50, created=9),
        _session("failed", S.FAILED, created=3),
        _session("running", S.DOWNLOADING, created=8),
        _session("queued-low-new", S.QUEUED, priority=0, created=5),
        _session("cancelled-new", S.CANCELLED, created=2, updated=20),
    ]
    assert [s.download_id for s in queue_order(sessions)] == [
        "running",
        "queued-high",
        "queued-low-old",
        "queued-low-new",
        "paused",
        "failed",
        "cancelled-new",
        "done-old",
    ]


IDS = [
    "0a1b2c3d-0000-4000-8000-000000000001",
    "0a1b2c3d-0000-4000-8000-000000000002",
    "9f00aa11-1111-4000-8000-000000000003",
]


def test_a_unique_prefix_or_a_whole_id_names_one_download():
    assert match_download("9F00", IDS) == IDS[2]
    assert match_download(IDS[0], IDS) == IDS[0]
    assert match_download("0a1b2c3d-0000-4000-8000-000000000002", IDS) == IDS[1]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("0a1", "too short: give at least 4 characters"),
        ("0a1b", "'0a1b' starts 2 downloads"),
        ("beef", "no download of yours starts with 'beef'"),
    ],
)
def test_a_prefix_that_does_not_name_one_download_says_why(given, message):
    with pytest.raises(LookupError, match=message):
        match_download(given, IDS)
