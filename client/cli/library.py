"""`library`: the games you own, with playtime, last played and installation.

library                                       (by name)
library --sort LAST_PLAYED_DESC --search dark --status INSTALLED --hidden
python -m client --json library               (every item, for scripts)
"""

from __future__ import annotations

import argparse
import dataclasses
from datetime import datetime

from rich.table import Table

from client import config
from client.cli.common import command, connect, out, print_json
from client.engine.record import Installs
from client.sdk.library import SORTS, STATUSES, LibraryClient, LibraryEntry


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser(
        "library",
        help="the games you own: playtime, last played, installation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--search", default="", help="part of the name (case-insensitive)")
    parser.add_argument("--sort", choices=SORTS, default="NAME_ASC", help="order (default: by name)")
    parser.add_argument("--status", choices=STATUSES, default="", help="only this installation status")
    parser.add_argument("--hidden", action="store_true", help="include hidden games")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    parser.set_defaults(handler=command(_library))


def duration(seconds: int) -> str:
    """Playtime as people read it: `12 s`, `42 min`, `3 h 05 min`."""
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "never"


def _entry_json(entry: LibraryEntry) -> dict:
    data = dataclasses.asdict(entry)
    for key in ("added_at", "last_played_at"):
        data[key] = data[key].isoformat() if data[key] else None
    return data


async def _library(args: argparse.Namespace) -> int:
    async with connect(args) as connection:
        client = LibraryClient(connection)
        entries = [
            entry
            async for entry in client.items(
                search=args.search, sort_by=args.sort, status=args.status, include_hidden=args.hidden
            )
        ]
    if args.json:
        print_json({"items": [_entry_json(e) for e in entries]})
        return 0
    installed = Installs(config.state_dir(args.config_dir)).all()
    table = Table(title=f"your library ({len(entries)} {'game' if len(entries) == 1 else 'games'})")
    for column in ("name", "product", "playtime", "last played", "status", "installed at"):
        table.add_column(column, justify="right" if column == "playtime" else "left")
    for entry in entries:
        install_dir = installed.get(entry.product_id)
        table.add_row(
            (entry.name or "(unnamed)") + (" [hidden]" if entry.hidden else ""),
            entry.product_id,
            duration(entry.total_playtime_seconds),
            _when(entry.last_played_at),
            entry.installation_status.replace("_", " ").lower(),
            str(install_dir) if install_dir else "-",
        )
    out.print(table)
    if not entries:
        out.print("nothing here yet" + (" that matches" if args.search or args.status else ""))
    return 0
