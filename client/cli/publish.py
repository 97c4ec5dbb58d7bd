"""`python -m client publish --product P --version NAME [--branch B] [--notes FILE] DIR`: publishes a build.

Needs a token with the `service` role. The directory is cut into content-defined chunks, hashed and
compressed in parallel on every core; only the chunks the store lacks are uploaded; the server verifies
them and makes the version the latest of its branch. Interrupted, the same command resumes: it uploads
only what is still missing.
"""

from __future__ import annotations

import argparse
import uuid
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

from client.cli.common import command, connect, error, print_json
from client.sdk.publishing import PublishReport, UploadError, publish
from client.sizes import human_size
from content_store.builds import BuildError, list_files


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser(
        "publish",
        help="publish a build directory as a product version (service token)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--product", required=True, help="product id (UUID)")
    parser.add_argument("--version", required=True, dest="version_name", help="version name, e.g. 1.4.2")
    parser.add_argument("--branch", default="", help="branch to publish to (default: public)")
    parser.add_argument("--notes", type=Path, help="file with the release notes")
    parser.add_argument("--workers", type=int, help="threads for chunking and compression (default: cores)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    parser.add_argument("directory", type=Path, metavar="DIR", help="the build to publish")
    parser.set_defaults(handler=command(_publish))


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


async def _publish(args: argparse.Namespace) -> int:
    try:
        uuid.UUID(args.product)
    except ValueError:
        return error(f"--product must be a product id (UUID), not {args.product!r}")
    try:
        notes = args.notes.read_text(encoding="utf-8") if args.notes else ""
        listed = list_files(args.directory)
    except (BuildError, OSError, UnicodeDecodeError) as exc:
        return error(f"{exc}")
    total = sum(size for _, size in listed)
    console = Console(stderr=True)
    with _progress(console) as progress:
        prepare = progress.add_task("prepare", total=total)
        upload = progress.add_task("upload", total=None, visible=False)
        try:
            async with connect(args) as conn:
                report = await publish(
                    conn,
                    args.directory,
                    product_id=args.product,
                    version_name=args.version_name,
                    branch=args.branch,
                    release_notes=notes,
                    workers=args.workers,
                    on_prepared=lambda n: progress.advance(prepare, n),
                    on_missing=lambda count, size: progress.update(upload, total=size, visible=count > 0),
                    on_uploaded=lambda n: progress.advance(upload, n),
                )
        except UploadError as exc:
            return error(f"{exc}; run the same command again to resume (only missing chunks are sent)")
        except BuildError as exc:
            return error(str(exc))
    if getattr(args, "json", False):
        print_json(_as_json(report))
    else:
        Console().print(_table(report))
    return 0


def _as_json(report: PublishReport) -> dict:
    v = report.version
    return {
        "versionId": v.version_id,
        "productId": v.product_id,
        "versionName": v.version_name,
        "branch": v.branch,
        "files": report.file_count,
        "bytes": report.total_bytes,
        "downloadSizeBytes": v.download_size_bytes,
        "distinctChunks": report.distinct_chunks,
        "uploadedChunks": report.uploaded_chunks,
        "deduplicatedChunks": report.deduplicated_chunks,
        "uploadedBytes": report.uploaded_bytes,
        "prepareSeconds": round(report.prepare_seconds, 3),
        "uploadSeconds": round(report.upload_seconds, 3),
        "commitSeconds": round(report.commit_seconds, 3),
        "prepareBytesPerSecond": round(report.prepare_throughput),
    }


def _table(report: PublishReport) -> Table:
    v = report.version
    table = Table(title=f"published {v.version_name} ({v.branch})", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("version id", v.version_id)
    table.add_row("files", f"{report.file_count:,}")
    table.add_row("bytes", human_size(report.total_bytes))
    table.add_row("chunks (distinct)", f"{report.distinct_chunks:,}")
    table.add_row("new chunks uploaded", f"{report.uploaded_chunks:,} ({human_size(report.uploaded_bytes)})")
    table.add_row("deduplicated chunks", f"{report.deduplicated_chunks:,}")
    table.add_row("download size", human_size(v.download_size_bytes))
    table.add_row("prepare throughput", f"{human_size(report.prepare_throughput)}/s")
    if report.uploaded_bytes:
        table.add_row("upload throughput", f"{human_size(report.uploaded_bytes / report.upload_seconds)}/s")
    table.add_row("server verification", f"{report.commit_seconds:.1f} s")
    return table
