"""`python -m client <group> ...`: the reference client's CLIs (the launcher's command groups and `publish`).

Every group lives in `client/cli/<group>.py` and registers its subcommands with `register(subparsers)`; each
command is an async function taking the parsed arguments and returning the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys

# The command groups, in the order `--help` lists them.
GROUPS: tuple[str, ...] = ("install", "saves", "settings", "publish")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m client", description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="host:port of the service's gRPC edge (env LIBRARY_TARGET)")
    parser.add_argument("--token", help="bearer token (env LIBRARY_TOKEN)")
    parser.add_argument("--token-file", help="file holding the bearer token (env LIBRARY_TOKEN_FILE)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    for name in GROUPS:
        importlib.import_module(f"client.cli.{name}").register(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
