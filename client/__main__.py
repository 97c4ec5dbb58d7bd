"""Reference client: launcher's commands and `publish` (`python -m client`; console script `launcher`).

Every group lives in `client/cli/<group>.py` and registers its subcommands with `register(subparsers)`; each
command is an async function taking the parsed arguments and returning the exit code. Everything after the
first `--` is the command line of a game (`play PRODUCT -- CMD...`), never parsed as options.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys

from client.config import config_dir

# The command groups, in the order `--help` lists them.
GROUPS: tuple[str, ...] = (
    "login",
    "library",
    "install",
    "downloads",
    "play",
    "saves",
    "settings",
    "publish",
)

EPILOG = """exit codes: 0 done; 1 error (the message names it); 2 bad command line; 130 interrupted;
per command (see its --help): 3 a save conflict waits for `saves resolve` / not enough disk space; 4 the game
exited non-zero / the download failed; 5 download cancelled; 6 damaged files; 7 not installed."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m client",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--target", help="host:port of the service's gRPC edge (env LIBRARY_TARGET)")
    parser.add_argument("--token", help="bearer token (env LIBRARY_TOKEN)")
    parser.add_argument("--token-file", help="file holding the bearer token (env LIBRARY_TOKEN_FILE)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    parser.add_argument(
        "--config-dir",
        help="this device's config and sync state (env LIBRARY_CONFIG_DIR; default ~/.config/library-client)",
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    for name in GROUPS:
        importlib.import_module(f"client.cli.{name}").register(groups)
    return parser


def split_command_line(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the launcher's own arguments, the game's command line after the first `--`)."""
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1 :]


def main(argv: list[str] | None = None) -> int:
    own, game_command = split_command_line(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(own)
    if game_command and args.group != "play":
        parser.error("only `play PRODUCT -- CMD...` takes a command line after --")
    args.game_command = game_command
    if args.config_dir or os.environ.get("LIBRARY_CONFIG_DIR"):
        # A config directory is a device: its state (saves synced, installations) lives beside it.
        os.environ.setdefault("LIBRARY_STATE_DIR", str(config_dir(args.config_dir)))
    try:
        return asyncio.run(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
