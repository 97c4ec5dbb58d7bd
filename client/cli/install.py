"""The launcher's install commands: `install`, `update`, `verify`, `uninstall` (the engine: client/engine/).

    install PRODUCT [--branch B | --version V] [--dir D]   install, or move to another version (a rollback
                                                           with an older --version)
    update [PRODUCT ...]                                   update installed products (default: all)
    verify PRODUCT [--repair]                              check every file; --repair re-fetches only the
                                                           chunks the server names and rewrites those files
    uninstall PRODUCT                                      delete the installed files

Downloads follow your download settings while they run (bandwidth limit, concurrency; `settings
downloads`), pause and resume with `downloads pause|resume`, and resume after a crash or `kill -9` from
their journal (run the same command again). `LAUNCHER_DISK_RESERVE_BYTES` (or --reserve) keeps that much
disk space free; `LAUNCHER_GAMES_DIR` is where products install without --dir.

Exit codes: 0 done (verify: intact or repaired) · 1 the service refused or could not be reached (the
message names the reason) · 2 bad command line · 3 not enough disk space (nothing was started) ·
4 the download failed (run it again to resume) · 5 the download was cancelled · 6 verify found damaged or
missing files (without --repair) · 7 the product is not installed on this device.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import uuid
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from client.cli.common import bearer_token, command, connect, error, print_json
from client.engine.engine import (
    DownloadCancelled,
    DownloadFailed,
    Engine,
    EngineError,
    NotEnoughSpace,
    NotInstalled,
    Outcome,
    Verification,
)
from client.sizes import human_size

EXIT_SPACE, EXIT_FAILED, EXIT_CANCELLED, EXIT_DAMAGED, EXIT_NOT_INSTALLED = 3, 4, 5, 6, 7


def register(groups: argparse._SubParsersAction) -> None:
    def add(name: str, help_text: str, run) -> argparse.ArgumentParser:
        parser = groups.add_parser(
            name, help=help_text, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        parser.set_defaults(handler=command(_guarded(run)))
        return parser

    install = add("install", "install a product, or switch it to another version", _install)
    install.add_argument("product", metavar="PRODUCT", help="product id (UUID)")
    which = install.add_mutually_exclusive_group()
    which.add_argument(
        "--branch", default="", help="install the latest of this branch (default: your choice, or public)"
    )
    which.add_argument("--version", default="", help="install this version (name or id); older = rollback")
    install.add_argument("--dir", type=Path, help="installation directory")
    install.add_argument(
        "--reserve", type=int, help="bytes of disk space to keep free (env LAUNCHER_DISK_RESERVE_BYTES)"
    )

    update = add("update", "update installed products", _update)
    update.add_argument(
        "products", nargs="*", metavar="PRODUCT", help="product ids (default: every installed one)"
    )

    verify = add("verify", "check an installation's files (and repair them)", _verify)
    verify.add_argument("product", metavar="PRODUCT")
    verify.add_argument(
        "--repair", action="store_true", help="re-fetch the damaged chunks and rewrite those files"
    )

    uninstall = add("uninstall", "delete an installed product's files", _uninstall)
    uninstall.add_argument("product", metavar="PRODUCT")


def _guarded(run):
    """Maps the engine's failures to their exit codes (a failed call is mapped by `command`)."""

    async def guarded(args: argparse.Namespace) -> int:
        named = [args.product] if hasattr(args, "product") else list(getattr(args, "products", ()))
        for value in named:
            try:
                uuid.UUID(value)
            except ValueError:
                return error(f"a product is named by its id (UUID), not {value!r}")
        try:
            return await run(args)
        except NotEnoughSpace as exc:
            return _fail(EXIT_SPACE, str(exc))
        except DownloadFailed as exc:
            return _fail(EXIT_FAILED, str(exc))
        except DownloadCancelled as exc:
            return _fail(EXIT_CANCELLED, f"{exc}; its staged files were removed")
        except NotInstalled as exc:
            return _fail(EXIT_NOT_INSTALLED, str(exc))
        except EngineError as exc:
            return error(str(exc))

    return guarded


def _fail(code: int, message: str) -> int:
    error(message)
    return code


def _engine(conn, args: argparse.Namespace, console: Console) -> Engine:
    return Engine(
        conn,
        bearer_token(args),
        reserve_bytes=getattr(args, "reserve", None),
        on_status=lambda status: (
            console.print(f"[dim]download {status}[/dim]") if status in ("queued", "paused") else None
        ),
    )


@contextlib.asynccontextmanager
async def _progress_of(engine: Engine, console: Console, label: str):
    """A progress bar of the running download, redrawn from the engine's counters."""
    bar = Progress(
        TextColumn(f"{label:<10}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )

    async def refresh(task) -> None:
        while True:
            bar.update(task, total=engine.total_bytes or None, completed=engine.done_bytes)
            await asyncio.sleep(0.2)

    with bar:
        task = bar.add_task(label, total=None)
        refresher = asyncio.create_task(refresh(task))
        try:
            yield
        finally:
            refresher.cancel()
            bar.update(task, total=engine.total_bytes or 1, completed=engine.total_bytes or 1)


def _outcome_json(outcome: Outcome) -> dict:
    return {
        "productId": outcome.product_id,
        "directory": str(outcome.directory),
        "versionId": outcome.version_id,
        "versionName": outcome.version_name,
        "previousVersionId": outcome.previous_version_id,
        "downloadId": outcome.download_id,
        "upToDate": outcome.up_to_date,
        "writtenFiles": outcome.written,
        "removedFiles": outcome.removed,
        "seconds": round(outcome.seconds, 3),
        "transferSeconds": round(outcome.transfer_seconds, 3),
        **{_camel(k): v for k, v in asdict(outcome.counters).items()},
    }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _outcome_table(outcome: Outcome) -> Table:
    c = outcome.counters
    table = Table(title=f"{outcome.product_id}: {outcome.version_name}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("directory", str(outcome.directory))
    if outcome.up_to_date:
        table.add_row("status", "already installed")
        return table
    table.add_row("files written", f"{len(outcome.written):,}")
    table.add_row("files removed", f"{len(outcome.removed):,}")
    table.add_row("downloaded", f"{c.fetched_chunks:,} chunks, {human_size(c.fetched_bytes)}")
    table.add_row("copied from disk", f"{c.copied_chunks:,} chunks, {human_size(c.copied_bytes)}")
    if c.resumed_chunks:
        table.add_row("kept from the interrupted run", f"{c.resumed_chunks:,} chunks")
    if c.retries or c.link_refreshes:
        table.add_row("retries / renewed links", f"{c.retries} / {c.link_refreshes}")
    table.add_row("time", f"{outcome.seconds:.1f} s")
    return table


async def _install(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    async with connect(args) as conn:
        engine = _engine(conn, args, console)
        async with engine.listening(), _progress_of(engine, console, "install"):
            outcome = await engine.install(
                args.product, directory=args.dir, version=args.version, branch=args.branch
            )
    if getattr(args, "json", False):
        print_json(_outcome_json(outcome))
    else:
        Console().print(_outcome_table(outcome))
    return 0


async def _update(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    async with connect(args) as conn:
        engine = _engine(conn, args, console)
        async with engine.listening(), _progress_of(engine, console, "update"):
            results = await engine.update(args.products or None)
    if getattr(args, "json", False):
        print_json(
            {
                "updates": [
                    {
                        "productId": u.product_id,
                        "installedVersionId": u.installed_version_id,
                        "latestVersionId": u.latest_version_id,
                        "latestVersionName": u.latest_version_name,
                        "updateAvailable": u.update_available,
                        "bytesToDownload": u.bytes_to_download,
                        "bytesToWrite": u.bytes_to_write,
                        "releaseNotes": u.release_notes,
                        "result": _outcome_json(o) if o else None,
                    }
                    for u, o in results
                ]
            }
        )
        return 0
    table = Table(title="updates")
    for column in ("product", "version", "downloaded", "written files", "removed files"):
        table.add_column(column)
    for u, o in results:
        version = f"{u.latest_version_name} (new)" if o else f"{u.latest_version_name} (up to date)"
        table.add_row(
            u.product_id,
            version,
            human_size(o.counters.fetched_bytes) if o else "-",
            str(len(o.written)) if o else "-",
            str(len(o.removed)) if o else "-",
        )
    Console().print(table if results else "nothing installed on this device")
    return 0


def _verification_json(v: Verification) -> dict:
    return {
        "productId": v.product_id,
        "directory": str(v.directory),
        "versionId": v.version_id,
        "checkedFiles": v.checked,
        "damagedFiles": [{"path": p, "problem": problem} for p, problem in v.damaged],
        "repairSizeBytes": v.repair_bytes,
        "repairedFiles": v.repaired,
        **{_camel(k): value for k, value in asdict(v.counters).items()},
    }


async def _verify(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    async with connect(args) as conn:
        engine = _engine(conn, args, console)
        with console.status("verifying"):
            result = await engine.verify(args.product, repair=args.repair)
    if getattr(args, "json", False):
        print_json(_verification_json(result))
    elif not result.damaged:
        Console().print(f"all {result.checked} files verified")
    else:
        table = Table(title=f"{len(result.damaged)} of {result.checked} files damaged")
        table.add_column("file")
        table.add_column("problem")
        table.add_column("repaired")
        for path, problem in result.damaged:
            table.add_row(path, problem.replace("_", " "), "yes" if path in result.repaired else "no")
        Console().print(table)
        if not args.repair:
            console.print(
                f"run `verify {args.product} --repair` to fetch {human_size(result.repair_bytes)} "
                "and fix them"
            )
    return EXIT_DAMAGED if result.damaged and not args.repair else 0


async def _uninstall(args: argparse.Namespace) -> int:
    async with connect(args) as conn:
        directory, removed = _engine(conn, args, Console(stderr=True)).uninstall(args.product)
    if getattr(args, "json", False):
        print_json({"productId": args.product, "directory": str(directory), "removedFiles": removed})
    else:
        Console().print(f"removed {removed} files from {directory}")
    return 0
