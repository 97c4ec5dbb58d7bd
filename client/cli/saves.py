"""`python -m client saves list|push|pull|resolve|restore`: the caller's cloud saves.

    saves list PRODUCT
    saves push PRODUCT SLOT FILE [--policy LONGEST_PLAYTIME] [--playtime 3600] [--progress 42.5]
    saves pull PRODUCT SLOT FILE [--version 3]
    saves resolve PRODUCT SLOT SAVEGAME_ID --keep local|cloud|both [--new-slot NAME]
    saves restore PRODUCT SLOT VERSION

A push is based on the version this device last pushed or pulled for the slot (or `--base N`). If the slot
moved on since, the upload is kept as a conflict candidate: both sides are shown and the command exits with
code 3 until you resolve it. A pull verifies the file's SHA-256 before it replaces FILE (atomically).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from client import config
from client.cli.common import (
    EXIT_CONFLICT,
    command,
    connect,
    device_id,
    err,
    error,
    launcher_config,
    out,
    print_json,
    program,
)
from client.sdk.connection import Connection
from client.sdk.save_sync import SaveDirSync
from client.sdk.saves import (
    POLICIES,
    RESOLUTIONS,
    Listing,
    SaveConflict,
    SaveGame,
    SavesClient,
    Slot,
    SyncState,
    TransferError,
)
from client.sizes import human_size


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser(
        "saves",
        help="push, pull and manage your cloud saves",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="ACTION")

    listing = commands.add_parser("list", help="the slots, versions and conflicts of a product")
    _product(listing)
    listing.set_defaults(handler=command(_list))

    push = commands.add_parser("push", help="upload FILE as the slot's next version")
    _slot(push)
    push.add_argument("file", metavar="FILE", type=Path)
    push.add_argument("--base", type=int, help="the version this file is based on (default: last synced)")
    push.add_argument("--policy", choices=POLICIES, default="MANUAL", help="what decides a conflict")
    push.add_argument("--playtime", type=int, help="the save's playtime in seconds (LONGEST_PLAYTIME)")
    push.add_argument("--progress", type=float, help="the save's completion 0-100 (HIGHEST_PROGRESS)")
    push.add_argument("--description", default="", help="e.g. 'Chapter 3 - Harbor'")
    push.add_argument("--device", help="this device's id (default: LIBRARY_DEVICE_ID or the host name)")
    push.set_defaults(handler=command(_push))

    pull = commands.add_parser("pull", help="download the slot's head (or --version) over FILE")
    _slot(pull)
    pull.add_argument("file", metavar="FILE", type=Path)
    pull.add_argument("--version", type=int, help="a retained version instead of the head")
    pull.set_defaults(handler=command(_pull))

    resolve = commands.add_parser("resolve", help="resolve a conflict candidate")
    _slot(resolve)
    resolve.add_argument("savegame", metavar="SAVEGAME_ID", help="the conflict candidate (see `saves list`)")
    resolve.add_argument("--keep", choices=sorted(RESOLUTIONS), required=True, help="which side to keep")
    resolve.add_argument("--new-slot", default="", help="with --keep both: the slot the local copy moves to")
    resolve.add_argument("--etag", default="", help="only if the slot still has this etag")
    resolve.set_defaults(handler=command(_resolve))

    restore = commands.add_parser("restore", help="make a retained version the new head")
    _slot(restore)
    restore.add_argument("version", metavar="VERSION", type=int)
    restore.add_argument("--etag", default="", help="only if the slot still has this etag")
    restore.add_argument("--device", help="this device's id (default: LIBRARY_DEVICE_ID or the host name)")
    restore.set_defaults(handler=command(_restore))


def _product(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("product", metavar="PRODUCT", help="product id (UUID)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


def _slot(parser: argparse.ArgumentParser) -> None:
    _product(parser)
    parser.add_argument("slot", metavar="SLOT", help="slot name: 1-64 of [A-Za-z0-9 _.-]")


def _save_json(save: SaveGame | None) -> dict | None:
    if save is None:
        return None
    data = dataclasses.asdict(save)
    for key in ("client_modified_at", "server_uploaded_at"):
        data[key] = data[key].isoformat() if data[key] else None
    return data


def _slot_json(slot: Slot | None) -> dict | None:
    if slot is None:
        return None
    return {
        "slotName": slot.slot_name,
        "etag": slot.etag,
        "head": _save_json(slot.head),
        "versions": [_save_json(v) for v in slot.versions],
        "conflicts": [_save_json(c) for c in slot.conflicts],
    }


def _when(save: SaveGame) -> str:
    return save.client_modified_at.strftime("%Y-%m-%d %H:%M:%S") if save.client_modified_at else "-"


def _show_listing(listing: Listing) -> None:
    table = Table(title="cloud saves")
    for column in ("slot", "version", "size", "device", "modified", "kept versions", "conflicts"):
        table.add_column(column)
    for slot in listing.slots:
        head = slot.head
        table.add_row(
            slot.slot_name,
            str(head.version_number) if head else "-",
            human_size(head.file_size_bytes) if head else "-",
            head.device_id if head else "-",
            _when(head) if head else "-",
            ", ".join(str(v.version_number) for v in slot.versions),
            str(len(slot.conflicts)),
        )
    out.print(table)
    for slot in listing.slots:
        for candidate in slot.conflicts:
            out.print(
                f"conflict in {slot.slot_name!r}: {candidate.savegame_id} from {candidate.device_id} "
                f"({human_size(candidate.file_size_bytes)}, modified {_when(candidate)})"
            )
    out.print(
        f"quota: {human_size(listing.used_bytes)} of {human_size(listing.quota_bytes)} used; "
        f"largest file {human_size(listing.max_file_size_bytes)}"
    )


def saves_client(connection: Connection, args: argparse.Namespace) -> SavesClient:
    """This device's saves client: its device id and the sync state beside its config."""
    state = SyncState(config.state_dir(getattr(args, "config_dir", None)))
    return SavesClient(connection, device_id=device_id(args), state=state)


def show_conflict(conflict: SaveConflict, product: str, args: argparse.Namespace) -> None:
    table = Table(
        title=f"conflict in slot {conflict.slot_name!r}: the cloud has version {conflict.cloud_version}"
    )
    table.add_column("")
    table.add_column("local (your upload)")
    table.add_column(f"cloud (version {conflict.cloud_version})")
    for key, label in (
        ("clientModifiedAt", "modified"),
        ("deviceId", "device"),
        ("fileSizeBytes", "size"),
        ("playtimeSeconds", "playtime (s)"),
        ("progressPercentage", "progress (%)"),
    ):
        table.add_row(label, conflict.local.get(key, "-"), conflict.cloud.get(key, "-"))
    err.print(table)
    err.print(
        "The cloud save changed since the version this file is based on; nothing was overwritten. Keep one:\n"
        f"  {program(args)} saves resolve {product} '{conflict.slot_name}' {conflict.savegame_id} "
        "--keep local|cloud|both [--new-slot NAME]"
    )


@contextlib.contextmanager
def _transfer(label: str, total: int, quiet: bool) -> Iterator:
    """A progress bar on stderr (stdout stays clean for --json); yields the per-chunk callback."""
    if quiet or not err.is_terminal:
        yield None
        return
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


async def _list(args: argparse.Namespace) -> int:
    async with connect(args) as connection:
        listing = await saves_client(connection, args).list(args.product)
    if args.json:
        print_json(
            {
                "slots": [_slot_json(s) for s in listing.slots],
                "quotaBytes": listing.quota_bytes,
                "usedBytes": listing.used_bytes,
                "maxFileSizeBytes": listing.max_file_size_bytes,
            }
        )
    else:
        _show_listing(listing)
    return 0


async def _push(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        return error(f"{args.file} is not a file")
    async with connect(args) as connection:
        saves = saves_client(connection, args)
        with _transfer(f"push {args.slot}", args.file.stat().st_size, args.json) as on_progress:
            try:
                pushed = await saves.push(
                    args.product,
                    args.slot,
                    args.file,
                    base_version=args.base,
                    policy=args.policy,
                    playtime_seconds=args.playtime,
                    progress_percentage=args.progress,
                    description=args.description,
                    on_progress=on_progress,
                )
            except SaveConflict as conflict:
                if args.json:
                    print_json({"conflict": dataclasses.asdict(conflict)})
                show_conflict(conflict, args.product, args)
                return EXIT_CONFLICT
            except TransferError as exc:
                return error(str(exc))
    if args.json:
        print_json(
            {
                "committed": pushed.committed,
                "autoResolved": pushed.auto_resolved,
                "saveGame": _save_json(pushed.save_game),
                "head": _save_json(pushed.head),
            }
        )
    elif pushed.committed:
        how = " (the conflict policy chose it)" if pushed.auto_resolved else ""
        out.print(f"pushed {args.file} as version {pushed.save_game.version_number} of {args.slot!r}{how}")
    else:
        out.print(
            f"the conflict policy kept the cloud's version {pushed.head.version_number}; your upload was "
            f"discarded. Pull it: {program(args)} saves pull {args.product} '{args.slot}' {args.file}"
        )
    return 0


async def _pull(args: argparse.Namespace) -> int:
    async with connect(args) as connection:
        saves = saves_client(connection, args)
        try:
            listing = await saves.list(args.product)
            slot = listing.slot(args.slot)
            total = slot.head.file_size_bytes if slot and slot.head else 0
            with _transfer(f"pull {args.slot}", total, args.json) as on_progress:
                pulled = await saves.pull(
                    args.product, args.slot, args.file, version=args.version, on_progress=on_progress
                )
        except (LookupError, TransferError) as exc:
            return error(str(exc))
    if args.json:
        print_json({"saveGame": _save_json(pulled), "file": str(args.file)})
    else:
        out.print(
            f"pulled version {pulled.version_number} of {args.slot!r} into {args.file} (SHA-256 verified)"
        )
    return 0


async def _resolve(args: argparse.Namespace) -> int:
    if args.keep == "both" and not args.new_slot:
        return error("--keep both needs --new-slot NAME: the slot your local copy moves to")
    async with connect(args) as connection:
        saves = saves_client(connection, args)
        slot, new_slot = await saves.resolve(
            args.product, args.slot, args.savegame, args.keep, new_slot=args.new_slot, etag=args.etag
        )
        # With a save directory configured (`play --save-dir`), its files follow the resolution.
        save_dir = launcher_config(args).product(args.product).save_dir
        updated = []
        if save_dir is not None:
            slots = [args.slot, *([new_slot.slot_name] if new_slot else [])]
            updated = await SaveDirSync(saves, args.product, save_dir).settle(*slots)
    if args.json:
        print_json({"slot": _slot_json(slot), "newSlot": _slot_json(new_slot), "localFilesUpdated": updated})
    else:
        out.print(f"resolved: {args.slot!r} is at version {slot.head.version_number if slot.head else '-'}")
        if new_slot is not None:
            out.print(f"your local copy is version 1 of the new slot {new_slot.slot_name!r}")
        for name in updated:
            out.print(f"{save_dir / name} now holds the cloud's {name!r}")
    return 0


async def _restore(args: argparse.Namespace) -> int:
    async with connect(args) as connection:
        slot = await saves_client(connection, args).restore(
            args.product, args.slot, args.version, etag=args.etag
        )
    if args.json:
        print_json({"slot": _slot_json(slot)})
    else:
        out.print(f"restored version {args.version} of {args.slot!r} as version {slot.head.version_number}")
    return 0
