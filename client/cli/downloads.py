"""`downloads`: your download queue, and moving things in it.

    downloads                        what is downloading, waiting (in queue order), paused or failed
    downloads --all                  also the completed and cancelled ones
    downloads pause ID               pause (frees its slot: the next in the queue starts)
    downloads resume ID              resume a paused one, or retry a failed one
    downloads cancel ID
    downloads move ID --priority 50  0-100; higher starts first (then the oldest)

ID may be the first characters of a download id, if only one of yours starts with them. At most
`settings downloads --max-concurrent N` downloads run at once; the rest wait by priority, then age.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence

from google.protobuf import json_format
from rich.progress_bar import ProgressBar
from rich.table import Table

from client.cli.common import command, connect, device_id, error, out, print_json
from client.sdk.downloads import DownloadsClient, status_name
from client.sdk.library import LibraryClient
from client.sizes import human_size
from download.v1 import download_service_pb2 as pb

Session = pb.DownloadSession
ACTIVE = (Session.DOWNLOADING, Session.QUEUED, Session.PAUSED, Session.FAILED)
MIN_PREFIX = 4


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser(
        "downloads",
        help="your download queue: pause, resume, cancel, move",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--all", action="store_true", help="also completed and cancelled downloads")
    _json(parser)
    parser.set_defaults(handler=command(_queue))
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    for name, help_text in (
        ("pause", "pause a download (its slot goes to the next in the queue)"),
        ("resume", "resume a paused download, or retry a failed one"),
        ("cancel", "cancel a download"),
    ):
        action = actions.add_parser(name, help=help_text)
        _download_id(action)
        action.set_defaults(handler=command(_change))
    move = actions.add_parser("move", help="change a download's place in the queue")
    _download_id(move)
    move.add_argument("--priority", type=int, required=True, help="0-100; higher starts first")
    move.set_defaults(handler=command(_change))


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


def _download_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("download", metavar="ID", help="download id, or its first characters")
    _json(parser)


def queue_order(sessions: Iterable[Session]) -> list[Session]:
    """Running first, then the waiting ones in the order they will start (priority, then age), then
    paused, failed, and the finished ones newest first."""
    rank = {status: i for i, status in enumerate(ACTIVE)}

    def key(s: Session) -> tuple:
        at = s.created_at.ToNanoseconds()
        if s.status == Session.QUEUED:
            return (rank[s.status], -s.priority, at)
        if s.status in rank:
            return (rank[s.status], 0, at)
        return (len(rank), 0, -(s.updated_at.ToNanoseconds() or at))

    return sorted(sessions, key=key)


def match_download(given: str, ids: Sequence[str]) -> str:
    """The one id `given` is, or starts; a LookupError says why not."""
    given = given.strip().lower()
    if given in ids:
        return given
    if len(given) < MIN_PREFIX:
        raise LookupError(f"'{given}' is too short: give at least {MIN_PREFIX} characters of the download id")
    found = [i for i in ids if i.startswith(given)]
    if not found:
        raise LookupError(f"no download of yours starts with '{given}' (see `downloads --all`)")
    if len(found) > 1:
        raise LookupError(f"'{given}' starts {len(found)} downloads: {', '.join(found)}; give more of it")
    return found[0]


def _speed(session: Session) -> str:
    return f"{human_size(session.speed_bytes_per_second)}/s" if session.status == Session.DOWNLOADING else "-"


def _eta(session: Session) -> str:
    if not session.HasField("eta_seconds") or session.status != Session.DOWNLOADING:
        return "-"
    minutes, seconds = divmod(session.eta_seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


async def _names(connection) -> dict[str, str]:
    return {e.product_id: e.name async for e in LibraryClient(connection).items(include_hidden=True)}


async def _queue(args: argparse.Namespace) -> int:
    async with connect(args) as connection:
        client = DownloadsClient(connection, device_id=device_id(args))
        sessions = queue_order(await client.list_all(statuses=() if args.all else ACTIVE))
        names = {} if args.json else await _names(connection)
    if args.json:
        print_json({"downloads": [json_format.MessageToDict(s) for s in sessions]})
        return 0
    if not sessions:
        ended = "" if args.all else " (`downloads --all` lists ended ones too)"
        out.print(f"downloads: nothing in the queue{ended}")
        return 0
    table = Table(title="downloads")
    for column in ("#", "game", "id", "status", "priority", "progress", "", "speed", "eta"):
        # Ids are what the other commands take: never cut.
        table.add_column(column, no_wrap=column == "id", min_width=36 if column == "id" else None)
    waiting = 0
    for session in sessions:
        if session.status == Session.QUEUED:
            waiting += 1
        table.add_row(
            str(waiting) if session.status == Session.QUEUED else "",
            names.get(session.product_id) or session.product_id,
            session.download_id,
            status_name(session.status) + (f" ({session.error_message})" if session.error_message else ""),
            str(session.priority),
            ProgressBar(total=100, completed=session.progress_percentage, width=20),
            f"{session.progress_percentage:.0f} % of {human_size(session.total_size_bytes)}",
            _speed(session),
            _eta(session),
        )
    out.print(table)
    return 0


async def _change(args: argparse.Namespace) -> int:
    async with connect(args) as connection:
        client = DownloadsClient(connection, device_id=device_id(args))
        try:
            download_id = await _resolve(client, args.download)
        except LookupError as exc:
            return error(str(exc))
        if args.action == "move":
            if not 0 <= args.priority <= 100:
                return error(f"--priority {args.priority} is not in 0-100")
            session = await client.reprioritize(download_id, args.priority)
        else:
            session = await getattr(client, args.action)(download_id)
    if args.json:
        print_json({"download": json_format.MessageToDict(session)})
    else:
        where = f", priority {session.priority}" if args.action == "move" else ""
        out.print(f"download {session.download_id} is {status_name(session.status)}{where}")
    return 0


async def _resolve(client: DownloadsClient, given: str) -> str:
    if len(given) == 36:
        return given  # a whole id: the server says if it is not one of yours
    return match_download(given, [s.download_id for s in await client.list_all()])
