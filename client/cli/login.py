"""`login` / `logout`: keep a token (and the service's address, this device's name) in the local config.

    login                    (the token from LIBRARY_TOKEN, --token, --token-file or standard input)
    python -m client --token-file ~/token.jwt login --target games.example.com:443 --device living-room
    logout                                 (forgets the token)

The token is checked against the service before it is stored (config.json, readable by you only). Options
and environment variables still win over what is stored, so one command can act as someone else.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime

from client import config
from client.cli.common import command, error, out, print_json
from client.sdk.connection import ConfigError, Connection, resolve_token
from client.sdk.library import LibraryClient


def register(groups: argparse._SubParsersAction) -> None:
    login = groups.add_parser(
        "login",
        help="store a token (checked first), the service address and this device's name",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    login.add_argument("--device", help="this device's id in sessions, saves and settings")
    login.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    login.set_defaults(handler=command(_login))

    logout = groups.add_parser("logout", help="forget the stored token")
    logout.set_defaults(handler=command(_logout))


def token_claims(token: str) -> dict:
    """The JWT's claims, decoded for display only (the service verifies the signature)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _read_token(args: argparse.Namespace) -> str:
    try:
        return resolve_token(args.token, args.token_file)
    except ConfigError:
        if args.token_file or os.environ.get("LIBRARY_TOKEN_FILE"):
            raise  # a named file that cannot be read
    token = getpass.getpass("token: ") if sys.stdin.isatty() else sys.stdin.read()
    if not token.strip():
        raise ConfigError("no token given: pass --token / --token-file, set LIBRARY_TOKEN or pipe it in")
    return token.strip()


async def _login(args: argparse.Namespace) -> int:
    token = _read_token(args)
    directory = config.config_dir(args.config_dir)
    stored = config.load(directory)
    target = args.target or os.environ.get("LIBRARY_TARGET") or stored.target
    async with Connection(token, target or None) as connection:
        # Any self-service read proves the service accepts the token.
        async for _ in LibraryClient(connection).items(page_size=1):
            break
        target = connection.target
    claims = token_claims(token)
    updated = replace(stored, target=target, token=token, device_id=args.device or stored.device_id)
    path = config.save(directory, updated)
    expires = datetime.fromtimestamp(claims["exp"], UTC) if isinstance(claims.get("exp"), int) else None
    if args.json:
        print_json(
            {
                "user": claims.get("sub"),
                "target": target,
                "deviceId": updated.device_id,
                "expiresAt": expires.isoformat() if expires else None,
                "config": str(path),
            }
        )
    else:
        until = f", token valid until {expires:%Y-%m-%d %H:%M} UTC" if expires else ""
        out.print(f"logged in as {claims.get('sub', '?')} at {target}{until}; saved in {path}")
    return 0


async def _logout(args: argparse.Namespace) -> int:
    directory = config.config_dir(args.config_dir)
    stored = config.load(directory)
    if not stored.token:
        return error(f"no token is stored in {directory / config.FILE_NAME}")
    config.save(directory, replace(stored, token=""))
    out.print("logged out: the token is no longer stored")
    return 0
