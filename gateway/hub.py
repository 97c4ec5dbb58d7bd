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
above. The hub reads the slot map again every MASTERS_SECONDS: a master that appeared (a failover
promoted a replica, a reshard added a node) gets a feed of its own (and its keyspace notifications turned
on), whose first subscription wakes every connection like any other; a node that is no longer a master
loses its feed.

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
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.streams import ensure_keyspace_events_on, keyspace_pattern, keyspace_prefix
from server.core.redis import RedisClient, keyspace_db, node_address, node_name, primaries
from server.core.redis_batching import RespConnection, open_resp

log = logging.getLogger(__name__)

POLL_SECONDS = 10.0  # an idle feed PINGs Redis this often
REPLY_SECONDS = 5.0  # connecting, subscribing, a PING: longer, and the feed is started again
MASTERS_SECONDS = 10.0  # how often a cluster's masters are looked up again
_PMESSAGE = b"pmessage"
RECENT_USERS = 100_000  # users whose latest feed event is remembered (for connections joining)


class Wakeable(Protocol):
    user_id: str

    def wake(self) -> None: ...


class NotificationHub:
    def __init__(self, redis: RedisClient, masters_seconds: float = MASTERS_SECONDS):
        self._redis = redis
        self._masters_seconds = masters_seconds
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
        self._feeds: dict[str, asyncio.Task] = {}  # by node name
        self._watcher: asyncio.Task | None = None
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
        for node in nodes:
            self._start_feed(node, initial=True)
        await asyncio.wait_for(self._subscribed.wait(), timeout)
        if isinstance(self._redis, RedisCluster):
            self._watcher = asyncio.create_task(self._watch_masters(), name="ws-notification-hub-masters")

    @property
    def masters(self) -> list[str]:
        """The nodes the hub listens to (names)."""
        return sorted(self._feeds)

    def _start_feed(self, node: RedisClient | ClusterNode, *, initial: bool) -> None:
        name = node_name(node)
        self._feeds[name] = asyncio.create_task(self._run(node, initial), name=f"ws-notification-hub-{name}")

    async def _watch_masters(self) -> None:
        """Follows the cluster's masters: a feed for each new one, none for a node that is no longer one."""
        while not self._stopping:
            await asyncio.sleep(self._masters_seconds)
            try:
                nodes = {node_name(node): node for node in await primaries(self._redis, refresh=True)}
                for name, node in nodes.items():
                    if name not in self._feeds:
                        await ensure_keyspace_events_on(self._redis, node)
                        log.info("listening to a new master", extra={"node": name})
                        self._start_feed(node, initial=False)
            except (RedisError, OSError):
                log.warning("could not read the cluster's masters", exc_info=True)
                continue
            for name in set(self._feeds) - set(nodes):
                log.info("no longer listening to a former master", extra={"node": name})
                self._feeds.pop(name).cancel()

    async def stop(self) -> None:
        """Stops the subscriber. Should the cancellation get lost inside the Redis client, the loop still
        ends by itself within POLL_SECONDS (it checks the flag)."""
        self._stopping = True
        tasks = [*self._feeds.values(), *([self._watcher] if self._watcher is not None else [])]
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=1.0)
        self._feeds, self._watcher = {}, None

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

    async def _run(self, node: RedisClient | ClusterNode, initial: bool) -> None:
        """One feed: the keyspace notifications of one Redis (one master of a cluster); `initial`: one of
        the feeds `start` waits for."""
        address, connection_class = node_address(node)
        subscribe = hiredis.pack_command((b"PSUBSCRIBE", self._pattern))
        ping = hiredis.pack_command((b"PING",))
        backoff = 0.1
        first = initial
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
