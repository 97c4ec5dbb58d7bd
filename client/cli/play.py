"""`play PRODUCT [--save-dir DIR] -- CMD...`: run a game with cloud saves and playtime tracking.

    play 7d3f7f4e-… --save-dir ~/.local/share/Game/saves -- ./game --fullscreen   (DIR is remembered)
    play 7d3f7f4e-… -- ./game

1. The product's save directory (from this device's config) is brought up to date from the cloud: files
   unchanged here since the last sync are replaced by newer cloud versions. A save changed both here and
   in the cloud is a conflict: both sides are shown with the command that resolves it, and the game does
   not start (exit 3).
2. A playtime session starts; CMD runs; the launcher heartbeats at the interval the server gave. A lost
   heartbeat is retried; the game never waits for the network.
3. When CMD exits (also when it crashes, or on Ctrl-C / SIGTERM, which are passed on to it: a second one
   terminates it, a third kills it) the session ends and the credited time is shown.
4. Every save file that changed is pushed. If another device pushed meanwhile, the upload waits in the
   cloud as a conflict candidate: both sides are shown (exit 3).

Exit codes: 0, 1 error, 3 save conflict, 4 the game exited non-zero, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from client import config
from client.cli.common import (
    EXIT_CONFLICT,
    EXIT_GAME_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    command,
    connect,
    describe,
    device_id,
    err,
    error,
    out,
    print_json,
)
from client.cli.library import duration
from client.cli.saves import saves_client, show_conflict
from client.sdk.playtime import PlaytimeClient, SessionEnded, SessionKeeper
from client.sdk.save_sync import SaveDirSync, SyncReport

# A game that ignores the first signal passed on gets SIGTERM on the next, then SIGKILL.
ESCALATION = (signal.SIGTERM, signal.SIGKILL)


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser(
        "play",
        help="run a game: cloud saves pulled before and pushed after, playtime tracked",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s PRODUCT [--save-dir DIR] [--json] -- CMD [ARG...]",
    )
    parser.add_argument("product", metavar="PRODUCT", help="product id (UUID)")
    parser.add_argument("--save-dir", type=Path, help="the game's save directory (remembered for PRODUCT)")
    parser.add_argument("--device", help="this device's id (default: config, LIBRARY_DEVICE_ID, host name)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    parser.set_defaults(handler=command(_play))


def signal_to_send(received: int, count: int, *, from_terminal: bool) -> int | None:
    """What the game gets when the launcher receives its `count`-th SIGINT/SIGTERM. Ctrl-C in a terminal
    already reached the game (same process group), so the first one is not sent again."""
    if count == 1:
        return None if received == signal.SIGINT and from_terminal else received
    return ESCALATION[min(count, len(ESCALATION) + 1) - 2]


def exit_code(*, conflicts: bool, interrupted: bool, game_returncode: int | None) -> int:
    """The launcher's exit code: what most needs the user's attention first."""
    if conflicts:
        return EXIT_CONFLICT
    if interrupted:
        return EXIT_INTERRUPTED
    if game_returncode:
        return EXIT_GAME_FAILED
    return EXIT_OK


def _in_terminal_foreground() -> bool:
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


class Game:
    """CMD as a child process, with SIGINT/SIGTERM passed on while it runs."""

    def __init__(self, argv: list[str], *, stdout: int | None) -> None:
        self.argv, self.stdout = argv, stdout
        self.signals = 0
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def interrupted(self) -> bool:
        return self.signals > 0

    def _on_signal(self, received: int) -> None:
        self.signals += 1
        send = signal_to_send(received, self.signals, from_terminal=_in_terminal_foreground())
        if self._proc is not None and self._proc.returncode is None and send is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(send)

    @contextlib.contextmanager
    def signals_passed_on(self):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def run(self) -> int:
        """Starts CMD and waits for it; its exit code (negative: killed by that signal)."""
        self._proc = await asyncio.create_subprocess_exec(*self.argv, stdout=self.stdout)
        return await self._proc.wait()


@dataclass
class PlayReport:
    product_id: str
    device_id: str
    session_id: str = ""
    heartbeat_interval_seconds: float = 0
    heartbeats_sent: int = 0
    heartbeats_failed: int = 0
    game_returncode: int | None = None
    interrupted: bool = False
    credited_seconds: int | None = None
    total_playtime_seconds: int | None = None
    save_dir: str | None = None
    pulled: tuple[str, ...] = ()
    pushed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    conflicts: tuple[dict, ...] = ()

    def sync(self, report: SyncReport, *, before: bool) -> None:
        if before:
            self.pulled = tuple(report.pulled)
        else:
            self.pushed = tuple(report.pushed)
        self.skipped = tuple(report.skipped)
        self.conflicts = tuple(asdict(c) for c in report.conflicts)


def _product_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise config.ConfigError(f"'{text}' is not a product id (a UUID)") from None


def _save_dir(args: argparse.Namespace, product_id: str) -> Path | None:
    """The product's save directory; `--save-dir` is remembered in the config for the next time."""
    directory = config.config_dir(args.config_dir)
    stored = config.load(directory)
    if args.save_dir is not None:
        stored = stored.with_product(product_id, save_dir=args.save_dir)
        config.save(directory, stored)
    return stored.product(product_id).save_dir


async def _play(args: argparse.Namespace) -> int:
    if not args.game_command:
        return error("give the game's command line after --, e.g. play PRODUCT -- ./game --fullscreen")
    product = _product_id(args.product)
    save_dir = _save_dir(args, product)
    report = PlayReport(product_id=product, device_id=device_id(args), save_dir=str(save_dir or "") or None)
    async with connect(args) as connection:
        saves = saves_client(connection, args)
        sync = SaveDirSync(saves, product, save_dir) if save_dir else None
        if sync is None:
            err.print(f"no save directory for {product}: saves are not synced (set one with --save-dir DIR)")
        else:
            before = await sync.before_play()
            report.sync(before, before=True)
            if before.conflicts:
                return _finish(args, report, before, stage="before")
            if before.pulled:
                err.print(f"pulled from the cloud: {', '.join(before.pulled)}")
        game = Game(args.game_command, stdout=sys.stderr.fileno() if args.json else None)
        with game.signals_passed_on():
            ended = await _session(args, PlaytimeClient(connection), game, report)
        after = None
        if sync is not None:
            total = ended.total_playtime_seconds if ended else None
            after = await sync.after_play(playtime_seconds=total)
            report.sync(after, before=False)
    return _finish(args, report, after, stage="after")


async def _session(
    args: argparse.Namespace, playtime: PlaytimeClient, game: Game, report: PlayReport
) -> SessionEnded | None:
    """Session start, the game with heartbeats, session end (whatever happened to the game)."""
    session = await playtime.start(report.product_id, report.device_id)
    keeper = SessionKeeper(playtime, session, warn=lambda line: err.print(f"warning: {line}"))
    report.session_id, report.heartbeat_interval_seconds = session.session_id, session.heartbeat_interval
    heartbeats = asyncio.create_task(keeper.run())
    try:
        if not game.interrupted:
            every = f"heartbeat every {session.heartbeat_interval:g} s"
            err.print(f"playing (session {session.session_id}, {every})")
            report.game_returncode = await game.run()
    except OSError as exc:
        err.print(f"error: cannot start {game.argv[0]}: {exc.strerror}")
        report.game_returncode = 127
    finally:
        heartbeats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeats
        report.interrupted = game.interrupted
        report.heartbeats_sent, report.heartbeats_failed = keeper.sent, keeper.failed
    try:
        ended = await playtime.end(keeper.session)
    except grpc.aio.AioRpcError as exc:
        err.print(
            f"warning: the session could not be ended ({describe(exc)}); the server closes it after "
            f"{3 * keeper.session.heartbeat_interval:g} s without heartbeats"
        )
        return None
    report.session_id = ended.session_id
    report.credited_seconds = ended.credited_seconds
    report.total_playtime_seconds = ended.total_playtime_seconds
    return ended


def _finish(args: argparse.Namespace, report: PlayReport, sync: SyncReport | None, *, stage: str) -> int:
    code = exit_code(
        conflicts=bool(report.conflicts),
        interrupted=report.interrupted,
        game_returncode=report.game_returncode,
    )
    if args.json:
        print_json({**asdict(report), "exitCode": code})
    for conflict in sync.conflicts if sync else ():
        show_conflict(conflict, report.product_id, args)
    if stage == "before" and report.conflicts:
        err.print("the game was not started: resolve the conflict above, then play again")
    if args.json:
        return code
    if report.game_returncode is not None:
        how = "was interrupted" if report.interrupted else f"exited with code {report.game_returncode}"
        credited = ""
        if report.credited_seconds is not None:
            total = duration(report.total_playtime_seconds)
            credited = f"; {duration(report.credited_seconds)} credited, {total} in total"
        out.print(f"the game {how}{credited}")
    if report.pushed:
        out.print(f"pushed to the cloud: {', '.join(report.pushed)}")
    if report.skipped:
        out.print(f"not synced (not a slot name, or a directory): {', '.join(report.skipped)}")
    return code
