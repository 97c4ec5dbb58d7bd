"""What every command group shares: connecting from the global options, printing results, and turning a
failed call into one line that names the problem (never a stack trace)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from client.sdk.connection import ConfigError, Connection, resolve_token

# What a user can do about a SPEC §4 reason whose server message does not say it.
HINTS = {
    "UNAUTHENTICATED": "the token is missing, expired or not accepted; get a fresh one",
    "UNAVAILABLE": "retry later, or check --target / LIBRARY_TARGET",
}


def connect(args: argparse.Namespace) -> Connection:
    return Connection(resolve_token(args.token, args.token_file), args.target)


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False, sort_keys=True)
    sys.stdout.write("\n")


def error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


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
