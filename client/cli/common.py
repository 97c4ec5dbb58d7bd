"""What every command group shares: connecting from the global options, printing results, and turning a
failed call into one line that names the problem (never a stack trace)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from rich.console import Console

from client import config
from client.sdk.connection import ConfigError, Connection, default_device_id, resolve_token

# Exit codes of every command (README "Exit codes"): scripts may rely on them.
EXIT_OK = 0
EXIT_ERROR = 1  # a call failed, a file is unreadable, the config is wrong: the message says which
EXIT_USAGE = 2  # the command line is wrong (argparse)
EXIT_CONFLICT = 3  # a cloud save conflict waits for `saves resolve` (both sides were shown)
EXIT_GAME_FAILED = 4  # `play`: the game exited non-zero (or was killed by a signal); its code is shown
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT / SIGTERM (the session was still ended and the saves pushed)

# Not a terminal (a log, a pipe): wide enough that tables are not wrapped into unreadable columns. Lines are
# never wrapped (a command to copy stays one line) nor read as markup (names and paths are printed as is).
out = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=True, markup=False)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160, soft_wrap=True, markup=False)

# What a user can do about a SPEC §4 reason whose server message does not say it.
HINTS = {
    "UNAUTHENTICATED": "the token is missing, expired or not accepted; get a fresh one",
    "UNAVAILABLE": "retry later, or check --target / LIBRARY_TARGET",
}


def launcher_config(args: argparse.Namespace) -> config.LauncherConfig:
    """This device's config file (`--config-dir` / LIBRARY_CONFIG_DIR)."""
    return config.load(config.config_dir(getattr(args, "config_dir", None)))


def bearer_token(args: argparse.Namespace) -> str:
    """`--token`, LIBRARY_TOKEN, `--token-file`, LIBRARY_TOKEN_FILE, else the token `login` stored."""
    return resolve_token(args.token, args.token_file, stored=launcher_config(args).token)


def connect(args: argparse.Namespace) -> Connection:
    """Options and environment first, then what `login` stored in the config file."""
    target = args.target or os.environ.get("LIBRARY_TARGET") or launcher_config(args).target
    return Connection(bearer_token(args), target or None)


def device_id(args: argparse.Namespace) -> str:
    """`--device`, else LIBRARY_DEVICE_ID, else the config's deviceId, else the host name."""
    explicit = getattr(args, "device", None) or os.environ.get("LIBRARY_DEVICE_ID")
    return explicit or launcher_config(args).device_id or default_device_id()


def program(args: argparse.Namespace) -> str:
    """How the user runs this CLI, for the commands a message tells them to run next."""
    name = "launcher" if os.path.basename(sys.argv[0]) == "launcher" else "python -m client"
    chosen = getattr(args, "config_dir", None)
    return f"{name} --config-dir {shlex.quote(str(chosen))}" if chosen else name


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False, sort_keys=True)
    sys.stdout.write("\n")


def error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR


def describe(exc: grpc.aio.AioRpcError) -> str:
    """`REASON: message (hint)`; for field problems `REASON:` and each violation on its own line."""
    reason, fields = "", []
    raw = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
    if raw:
        for detail in status_pb2.Status.FromString(raw).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                fields = [f"  {v.field}: {v.description}" for v in bad.field_violations]
    reason = reason or exc.code().name
    text = f"{reason}:" if fields else f"{reason}: {exc.details()}"
    if reason in HINTS:
        text += f" ({HINTS[reason]})"
    return "\n".join([text, *fields])


def command(
    run: Callable[[argparse.Namespace], Awaitable[int]],
) -> Callable[[argparse.Namespace], Awaitable[int]]:
    """Wraps a command: configuration and call failures become one clear message and exit code 1."""

    async def handler(args: argparse.Namespace) -> int:
        try:
            return await run(args)
        except ConfigError as exc:
            return error(str(exc))
        except grpc.aio.AioRpcError as exc:
            return error(describe(exc))

    return handler
