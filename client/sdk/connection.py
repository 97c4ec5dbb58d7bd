"""One authenticated gRPC channel to the service, and the retry rule every SDK call follows.

The token comes from `--token`, the `LIBRARY_TOKEN` environment variable or a token file
(`--token-file` / `LIBRARY_TOKEN_FILE`); the target from `--target` / `LIBRARY_TARGET` (default: the local
Envoy edge). Calls that fail with UNAVAILABLE are retried with jittered exponential backoff; writes that may
be retried carry one `request_id` across all their attempts, so the server applies them once (AIP-155).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

DEFAULT_TARGET = "127.0.0.1:8080"
T = TypeVar("T")


class ConfigError(Exception):
    """The client was not told enough to connect (no token, unreadable token file)."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, first * 2**attempt)]."""
        return random.uniform(0, min(self.max_delay, self.first_delay * 2**attempt))


def resolve_token(token: str | None = None, token_file: str | None = None, *, stored: str = "") -> str:
    """`token`, LIBRARY_TOKEN, the file `token_file` / LIBRARY_TOKEN_FILE names, else `stored` (the token
    `login` kept in the launcher's config)."""
    token = token or os.environ.get("LIBRARY_TOKEN")
    if token:
        return token.strip()
    path = token_file or os.environ.get("LIBRARY_TOKEN_FILE")
    if not path and stored:
        return stored
    if not path:
        raise ConfigError(
            "no token: run `login`, pass --token or --token-file, or set LIBRARY_TOKEN or LIBRARY_TOKEN_FILE"
        )
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from None


def default_device_id() -> str:
    """This device's id in what it writes (other devices ignore their own changes by it):
    `LIBRARY_DEVICE_ID`, else the host name."""
    return os.environ.get("LIBRARY_DEVICE_ID") or socket.gethostname()


def new_request_id() -> str:
    return str(uuid.uuid4())


class Connection:
    """An async gRPC channel plus the caller's bearer token. Use as `async with Connection(...) as conn`."""

    def __init__(self, token: str, target: str | None = None, *, retry: RetryPolicy | None = None) -> None:
        self.target = target or os.environ.get("LIBRARY_TARGET", DEFAULT_TARGET)
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.retry_policy = retry or RetryPolicy()
        self.channel = grpc.aio.insecure_channel(
            self.target, options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)]
        )

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def call(self, rpc: Callable[..., Awaitable[T]], request, *, timeout: float = 30.0) -> T:
        """Calls a stub method with the caller's credentials, retrying on UNAVAILABLE.

        A request with a `request_id` field keeps the same id across attempts (set it once, before the call).
        """
        for attempt in range(self.retry_policy.attempts):
            try:
                return await rpc(request, metadata=self.metadata, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                last = attempt == self.retry_policy.attempts - 1
                if exc.code() != grpc.StatusCode.UNAVAILABLE or last:
                    raise
            await asyncio.sleep(self.retry_policy.delay(attempt))
        raise AssertionError("unreachable")
