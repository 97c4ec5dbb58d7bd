"""Chunk GETs through signed links: read under the bandwidth cap, decompressed and SHA-256-verified against
the chunk's id before anyone writes them; retried with jittered backoff on timeouts, dropped connections,
5xx and bytes that don't verify; a link the store refuses (403: expired or no longer valid) or that is
about to expire is renewed by asking for its manifest page again."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from client.engine.plan import ChunkJob
from client.engine.throttle import Gate, Throttle
from content_store.chunking import ChunkContentError, decompress_chunk

ATTEMPTS = 6
LINK_REFRESHES = 3
EXPIRY_MARGIN = timedelta(0)  # renewed once expired by our clock, or when the store refuses it
READ_BLOCK = 64 * 1024  # what one socket read returns at most (httpcore)


class FetchError(Exception):
    """A chunk could not be fetched and verified after every retry."""


@dataclass
class Counters:
    """What a run moved: the launcher's own account, reported in `--json` and by the bench."""

    fetched_chunks: int = 0
    fetched_bytes: int = 0  # compressed bytes of chunks fetched and verified
    read_bytes: int = 0  # every byte read from the store, failed attempts included
    copied_chunks: int = 0  # taken from files on disk instead of the network
    copied_bytes: int = 0
    resumed_chunks: int = 0  # placed by an interrupted run and still verified
    retries: int = 0
    link_refreshes: int = 0


@dataclass
class Link:
    url: str
    expires_at: datetime | None
    page_token: str | None  # the manifest page that renews it; None: cannot be renewed


class Links:
    """The current link of each chunk; renewing one renews its whole manifest page (once, however many
    streams found it stale)."""

    def __init__(self, renew: Callable[[str], Awaitable[dict[str, Link]]] | None = None) -> None:
        self._links: dict[str, Link] = {}
        self._renew = renew
        self._locks: dict[str, asyncio.Lock] = {}

    def put(self, chunk_id: str, link: Link) -> None:
        self._links[chunk_id] = link

    def get(self, chunk_id: str) -> Link:
        return self._links[chunk_id]

    async def renew(self, chunk_id: str, stale: Link) -> bool:
        """Fetches fresh links for the page of `stale`; False when that is impossible."""
        if self._renew is None or stale.page_token is None:
            return False
        lock = self._locks.setdefault(stale.page_token, asyncio.Lock())
        async with lock:
            if self._links[chunk_id].url != stale.url:
                return True  # another stream renewed it meanwhile
            self._links.update(await self._renew(stale.page_token))
        return True


def _expiring(link: Link) -> bool:
    return link.expires_at is not None and link.expires_at - EXPIRY_MARGIN <= datetime.now(UTC)


def _verify_and_place(blob: bytes, job: ChunkJob, place: Callable[[bytes], None]) -> bool:
    """Decompresses and checks the chunk against its id; only then hands its bytes to `place`."""
    try:
        data = decompress_chunk(blob, job.size)
    except ChunkContentError:
        return False
    if hashlib.sha256(data).hexdigest() != job.chunk_id:
        return False
    place(data)
    return True


class Fetcher:
    """GETs under `gate` (the download's parallelism; verification and writing happen outside it, so a
    slot always has a request on the wire) and `throttle` (the bandwidth cap)."""

    def __init__(
        self, http: httpx.AsyncClient, throttle: Throttle, gate: Gate, links: Links, counters: Counters
    ) -> None:
        self._http = http
        self._throttle = throttle
        self._gate = gate
        self._links = links
        self.counters = counters

    async def fetch(self, job: ChunkJob, place: Callable[[bytes], None]) -> None:
        """Fetches the chunk and, once it verified, calls `place(bytes)` (in a worker thread)."""
        refreshes, problem = 0, ""
        for attempt in range(ATTEMPTS):
            link = self._links.get(job.chunk_id)
            if _expiring(link) and refreshes < LINK_REFRESHES and await self._links.renew(job.chunk_id, link):
                refreshes += 1
                self.counters.link_refreshes += 1
                link = self._links.get(job.chunk_id)
            try:
                async with self._gate:
                    status, blob = await self._get(link.url)
            except httpx.TransportError as exc:  # timeouts, refused or dropped connections
                status, blob, problem = 0, b"", type(exc).__name__
            if status == 403 and refreshes < LINK_REFRESHES and await self._links.renew(job.chunk_id, link):
                refreshes += 1
                self.counters.link_refreshes += 1
                continue  # a renewed link is tried at once
            if status == 200:
                if await asyncio.to_thread(_verify_and_place, blob, job, place):
                    self.counters.fetched_chunks += 1
                    self.counters.fetched_bytes += len(blob)
                    return
                problem = "the bytes did not verify"
            elif status:
                problem = f"HTTP {status}"
                if 400 <= status < 500 and status not in (403, 408, 429):
                    break  # the store will not serve it: retrying cannot help
            if attempt < ATTEMPTS - 1:
                self.counters.retries += 1
                await asyncio.sleep(random.uniform(0, min(5.0, 0.25 * 2**attempt)))
        raise FetchError(f"chunk {job.chunk_id[:12]}… could not be downloaded ({problem})")

    async def _get(self, url: str) -> tuple[int, bytes]:
        async with self._http.stream("GET", url) as reply:
            if reply.status_code != 200:
                await reply.aread()
                return reply.status_code, b""
            pieces = []
            async for piece in reply.aiter_raw():  # as each socket read returns them (at most READ_BLOCK)
                pieces.append(piece)
                self.counters.read_bytes += len(piece)
                await self._throttle.consume(len(piece))
            return 200, b"".join(pieces)
