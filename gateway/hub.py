"""The relay process's one Redis reader: which users' streams got new entries.

Every open connection used to wait in its own XREAD BLOCK, holding a pooled Redis connection each (so a
process stopped at its pool size). Instead, one subscriber per process listens to the keyspace
notifications of the notification streams (gateway.streams) and wakes the connections of the user whose
stream an XADD touched; they then read what is new with a plain XRANGE through the shared pool.

Nothing is lost across gaps in the feed: a connection joining reads at once if its user's stream grew
since its handshake pinned the cursor (the hub remembers recent events, so an idle user's join costs no
Redis call), and every time the subscription is (re)established all connections read (covering whatever
was added while the subscriber was disconnected). The feed only says "look";
the stream is the source of truth.

Keyspace notifications are node-local: against a Redis Cluster the hub runs one subscriber per master
(each stream lives on the master of its slot), and a feed (re)subscribing wakes every connection, as
above. The masters are those of the slot map when the hub starts.

Each feed is a RESP connection of its own (server.core.redis_batching.open_resp) whose events are handled
as they are read, many per read: redis-py's PubSub.get_message cost a coroutine, a timeout, a retry
wrapper and a dict per event, about a seventh of the relay's CPU per notification. An idle feed PINGs
every POLL_SECONDS; no answer within REPLY_SECONDS, or a lost connection, and it resubscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

import hiredis
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.streams import keyspace_pattern, keyspace_prefix
from server.core.redis import RedisClient, keyspace_db, node_address, primaries
from server.core.redis_batching import RespConnection, open_resp

log = logging.getLogger(__name__)

POLL_SECONDS = 10.0  # an idle feed PINGs Redis this often
REPLY_SECONDS = 5.0  # connecting, subscribing, a PING: longer, and the feed is started again
_PMESSAGE = b"pmessage"
RECENT_USERS = 100_000  # users whose latest feed event is remembered (for connections joining)


class Wakeable(Protocol):
    user_id: str

    def wake(self) -> None: ...


class NotificationHub:
    def __init__(self, redis: RedisClient):
        self._redis = redis
        db = keyspace_db(redis)
        self._pattern = keyspace_pattern(db)
        self._prefix = keyspace_prefix(db).encode()
        self._members: dict[str, set[Wakeable]] = {}
        # Feed events are numbered; `_recent` keeps the number of the latest event of the RECENT_USERS users
        # who had one most recently, so a connection joining knows whether its stream grew since its
        # handshake (mark) without asking Redis. Anything older than `_forgotten` may be missing from it.
        self._seq = 0
        self._recent: dict[str, int] = {}
        self._forgotten = 0
        self._subscribed = asyncio.Event()
        self._unsubscribed_feeds = 0  # feeds that have not subscribed once yet
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    def __len__(self) -> int:
        return sum(len(members) for members in self._members.values())

    @property
    def users(self) -> int:
        return len(self._members)

    async def start(self, timeout: float = 10.0) -> None:
        """Starts the subscribers and waits until they all listen (connections may join from then on)."""
        nodes = await asyncio.wait_for(primaries(self._redis), timeout)
        self._unsubscribed_feeds = len(nodes)
        self._tasks = [
            asyncio.create_task(self._run(node), name=f"ws-notification-hub-{n}")
            for n, node in enumerate(nodes)
        ]
        await asyncio.wait_for(self._subscribed.wait(), timeout)

    async def stop(self) -> None:
        """Stops the subscriber. Should the cancellation get lost inside the Redis client, the loop still
        ends by itself within POLL_SECONDS (it checks the flag)."""
        self._stopping = True
        if not self._tasks:
            return
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks, timeout=1.0)
        self._tasks = []

    def mark(self) -> int:
        """Taken before a connection pins its cursor (handshake); given back to `join`."""
        return self._seq

    def join(self, member: Wakeable, since: int) -> None:
        """From now on the member is woken for its user's XADDs; woken at once if the feed announced one
        (or may have) since `since`, i.e. between its handshake and now."""
        self._members.setdefault(member.user_id, set()).add(member)
        if self._recent.get(member.user_id, 0) > since or self._forgotten > since:
            member.wake()

    def leave(self, member: Wakeable) -> None:
        members = self._members.get(member.user_id)
        if members is not None:
            members.discard(member)
            if not members:
                del self._members[member.user_id]

    def _event(self, user_id: str) -> None:
        self._seq += 1
        self._recent.pop(user_id, None)
        self._recent[user_id] = self._seq
        if len(self._recent) > RECENT_USERS:
            oldest = next(iter(self._recent))
            self._forgotten = max(self._forgotten, self._recent.pop(oldest))
        self._wake_user(user_id)

    def _wake_user(self, user_id: str) -> None:
        for member in tuple(self._members.get(user_id, ())):
            member.wake()

    def _wake_all(self) -> None:
        for members in tuple(self._members.values()):
            for member in tuple(members):
                member.wake()

    async def _run(self, node: RedisClient | ClusterNode) -> None:
        """One feed: the keyspace notifications of one Redis (one master of a cluster)."""
        address, connection_class = node_address(node)
        subscribe = hiredis.pack_command((b"PSUBSCRIBE", self._pattern))
        ping = hiredis.pack_command((b"PING",))
        backoff = 0.1
        first = True
        while not self._stopping:
            feed: _Feed | None = None
            try:
                async with asyncio.timeout(REPLY_SECONDS):
                    feed = await open_resp(address, connection_class, lambda: _Feed(self._handle))
                    await feed.call(subscribe)
                self._subscribed_feed(first)
                first = False
                backoff = 0.1
                while not self._stopping:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL_SECONDS):
                            await asyncio.shield(feed.closed)
                    if feed.lost:
                        raise RedisConnectionError("notification feed connection lost")
                    async with asyncio.timeout(REPLY_SECONDS):
                        await feed.call(ping)
            except (RedisError, OSError, TimeoutError):
                log.warning("notification feed lost; resubscribing", exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if feed is not None:
                    feed.close()

    def _handle(self, channel: bytes, data: bytes) -> None:
        if data == b"xadd" and channel.startswith(self._prefix) and channel.endswith(b"}"):
            self._event(channel[len(self._prefix) : -1].decode())

    def _subscribed_feed(self, first: bool) -> None:
        """A feed (re)subscribed: anything added while it did not listen is read now."""
        if first:
            self._unsubscribed_feeds -= 1
            if self._unsubscribed_feeds == 0:
                self._subscribed.set()
        else:
            log.info("notification feed resubscribed", extra={"users": self.users})
        self._seq += 1
        self._forgotten = self._seq  # events while nobody listened are unknown
        self._wake_all()


class _Feed(RespConnection):
    """A subscribed connection: each keyspace event (a `pmessage` push) goes to `on_event` as it is read;
    other replies (to PSUBSCRIBE, PING) resolve their callers in order."""

    def __init__(self, on_event: Callable[[bytes, bytes], None]):
        super().__init__()
        self._on_event = on_event
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        reader, waiters = self._reader, self._waiters
        reader.feed(data)
        reply = reader.gets()
        while reply is not False:
            if type(reply) is list and reply[0] == _PMESSAGE:
                self._on_event(reply[2], reply[3])
            elif waiters:
                self._answered += 1
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(reply)
            reply = reader.gets()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)
