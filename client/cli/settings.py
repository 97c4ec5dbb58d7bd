"""`python -m client settings get|set|patch PRODUCT ...`: your per-game settings; `settings downloads`: your
download settings.

    settings get PRODUCT
    settings set PRODUCT --file settings.json        (or --value '{"sound": 0.7}', or --file - for stdin)
    settings patch PRODUCT graphics.quality=ultra graphics.vsync=null sound=0.7
    settings patch PRODUCT --value '{"graphics": {"vsync": null}}' --etag v3

    settings downloads                                 (show them)
    settings downloads --max-concurrent 2 --bandwidth 20000 --schedule 01:00-07:00 --time-zone Europe/Berlin
    settings downloads --no-schedule --branch PRODUCT=beta --branch OTHER=public

A patch is an RFC 7386 merge patch: nested objects merge, `null` deletes a key. `--etag` makes the write
conditional (it fails with ETAG_MISMATCH if the settings changed since that etag was read).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from client.cli.common import command, connect, error, print_json
from client.sdk.download_settings import (
    DownloadSettings,
    DownloadSettingsChange,
    DownloadSettingsClient,
    Schedule,
)
from client.sdk.settings import GameSettings, SettingsClient


class UsageError(Exception):
    """The command line does not describe a JSON object to write."""


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser(
        "settings",
        help="read and write your per-game settings",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="ACTION")

    get = commands.add_parser("get", help="show the settings of a product")
    _common(get)
    get.set_defaults(handler=command(_get))

    put = commands.add_parser("set", help="replace the settings of a product with a JSON object")
    _common(put)
    _document_source(put)
    put.set_defaults(handler=command(_set), merge=False, assignments=[])

    patch = commands.add_parser("patch", help="merge changes into the settings (RFC 7386; null deletes)")
    _common(patch)
    patch.add_argument(
        "assignments", nargs="*", metavar="KEY=VALUE", help="dotted key and a JSON value (else a string)"
    )
    _document_source(patch)
    patch.set_defaults(handler=command(_set), merge=True)

    downloads = commands.add_parser("downloads", help="show or change your download settings")
    downloads.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    downloads.add_argument("--max-concurrent", type=int, metavar="N", help="downloads at once, 1-10")
    downloads.add_argument("--bandwidth", type=int, metavar="KBPS", help="limit in kbit/s, 0 = unlimited")
    window = downloads.add_mutually_exclusive_group()
    window.add_argument("--schedule", metavar="HH:MM-HH:MM", help="daily window for queued downloads")
    window.add_argument("--no-schedule", action="store_true", help="download at any time")
    downloads.add_argument("--time-zone", help="IANA zone of --schedule (default: this machine's, else UTC)")
    downloads.add_argument(
        "--branch",
        action="append",
        default=[],
        metavar="PRODUCT=BRANCH",
        help="branch to follow (repeatable)",
    )
    downloads.add_argument("--etag", default="", help="change only if the settings still have this etag")
    downloads.add_argument("--device", help="this device's id in the notification (default: host name)")
    downloads.set_defaults(handler=command(_downloads))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("product", metavar="PRODUCT", help="product id (UUID)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


def _document_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", help="read the JSON object from FILE (`-`: standard input)")
    source.add_argument("--value", help="the JSON object itself")
    parser.add_argument("--etag", default="", help="write only if the settings still have this etag")
    parser.add_argument("--device", help="this device's id in the notification (default: host name)")


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`a.b=1 c=x d=null` → `{"a": {"b": 1}, "c": "x", "d": None}` (values that are not JSON are strings)."""
    document: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        names = key.split(".")
        if not sep or not all(names):
            raise UsageError(f"'{assignment}' is not KEY=VALUE (KEY may be dotted: graphics.quality=ultra)")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = document
        for name in names[:-1]:
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise UsageError(f"'{assignment}' sets a key inside '{name}', which is already a value")
            node = child
        node[names[-1]] = value
    return document


def _read_document(args: argparse.Namespace) -> dict[str, Any]:
    if args.file is not None or args.value is not None:
        if args.assignments:
            raise UsageError("give KEY=VALUE pairs or --file/--value, not both")
        try:
            text = args.value if args.value is not None else _read(args.file)
            document = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"that is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise UsageError("the settings must be a JSON object ({...})")
        return document
    if args.assignments:
        return parse_assignments(args.assignments)
    raise UsageError(
        "nothing to write: give --file FILE, --value JSON" + (" or KEY=VALUE pairs" if args.merge else "")
    )


def _read(file: str) -> str:
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None


def _show(settings: GameSettings, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "productId": settings.product_id,
                "settings": settings.settings,
                "etag": settings.etag,
                "lastSyncedAt": settings.last_synced_at.isoformat() if settings.last_synced_at else None,
                "updatedByDeviceId": settings.updated_by_device_id,
            }
        )
        return
    synced = settings.last_synced_at.strftime("%Y-%m-%d %H:%M:%S UTC") if settings.last_synced_at else "never"
    by = f" by {settings.updated_by_device_id}" if settings.updated_by_device_id else ""
    print(f"product {settings.product_id}   etag {settings.etag}   synced {synced}{by}")
    print(json.dumps(settings.settings, indent=2, ensure_ascii=False, sort_keys=True))


async def _get(args: argparse.Namespace) -> int:
    async with connect(args) as connection:
        settings = await SettingsClient(connection).get(args.product)
    _show(settings, args.json)
    return 0


async def _set(args: argparse.Namespace) -> int:
    try:
        document = _read_document(args)
    except UsageError as exc:
        return error(str(exc))
    async with connect(args) as connection:
        client = SettingsClient(connection, device_id=args.device)
        write = client.patch if args.merge else client.replace
        settings = await write(args.product, document, etag=args.etag)
    _show(settings, args.json)
    return 0


def local_time_zone() -> str:
    """This machine's IANA zone name (from TZ or /etc/localtime), else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        try:
            name = str(Path("/etc/localtime").resolve()).partition("zoneinfo/")[2]
        except OSError:
            name = ""
    return name or "UTC"


def download_change(args: argparse.Namespace) -> DownloadSettingsChange:
    schedule = None
    if args.schedule:
        start, sep, end = args.schedule.partition("-")
        if not sep:
            raise UsageError(f"--schedule '{args.schedule}' is not HH:MM-HH:MM (e.g. 01:00-07:00)")
        schedule = Schedule(start.strip(), end.strip(), args.time_zone or local_time_zone())
    branches = {}
    for pair in args.branch:
        product, sep, branch = pair.partition("=")
        if not sep or not product or not branch:
            raise UsageError(f"--branch '{pair}' is not PRODUCT=BRANCH (e.g. {pair or 'PRODUCT'}=beta)")
        branches[product] = branch
    return DownloadSettingsChange(
        max_concurrent_downloads=args.max_concurrent,
        bandwidth_limit_kbps=args.bandwidth,
        schedule=schedule,
        clear_schedule=args.no_schedule,
        branches=branches,
    )


def _show_downloads(settings: DownloadSettings, as_json: bool) -> None:
    window = settings.schedule
    if as_json:
        print_json(
            {
                "maxConcurrentDownloads": settings.max_concurrent_downloads,
                "bandwidthLimitKbps": settings.bandwidth_limit_kbps,
                "schedule": {"startTime": window.start, "endTime": window.end, "timeZone": window.time_zone}
                if window
                else None,
                "productBranches": settings.branches,
                "etag": settings.etag,
                "updatedAt": settings.updated_at.isoformat() if settings.updated_at else None,
            }
        )
        return
    limit = f"{settings.bandwidth_limit_kbps} kbit/s" if settings.bandwidth_limit_kbps else "unlimited"
    print(f"downloads at once   {settings.max_concurrent_downloads}")
    print(f"bandwidth           {limit}")
    print(
        f"schedule            {f'{window.start}-{window.end} ({window.time_zone})' if window else 'any time'}"
    )
    for product, branch in sorted(settings.branches.items()):
        print(f"branch              {product} → {branch}")
    print(f"etag                {settings.etag}")


async def _downloads(args: argparse.Namespace) -> int:
    try:
        change = download_change(args)
    except UsageError as exc:
        return error(str(exc))
    unchanged = change == DownloadSettingsChange()
    async with connect(args) as connection:
        client = DownloadSettingsClient(connection, device_id=args.device)
        settings = await (client.get() if unchanged else client.update(change, etag=args.etag))
    _show_downloads(settings, args.json)
    return 0
