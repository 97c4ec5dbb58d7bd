"""`python -m client settings get|set|patch PRODUCT ...`: the caller's per-game settings document.

    settings get PRODUCT
    settings set PRODUCT --file settings.json        (or --value '{"sound": 0.7}', or --file - for stdin)
    settings patch PRODUCT graphics.quality=ultra graphics.vsync=null sound=0.7
    settings patch PRODUCT --value '{"graphics": {"vsync": null}}' --etag v3

A patch is an RFC 7386 merge patch: nested objects merge, `null` deletes a key. `--etag` makes the write
conditional (it fails with ETAG_MISMATCH if the settings changed since that etag was read).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from client.cli.common import command, connect, error, print_json
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
