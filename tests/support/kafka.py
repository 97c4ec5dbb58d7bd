"""Kafka the way a peer service sees it: a real consumer reading what the service published, a real producer
publishing what the service consumes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from server.core.events.cloudevents import REQUIRED_ATTRIBUTES


def assert_cloud_event(event: dict[str, Any]) -> None:
    missing = [a for a in REQUIRED_ATTRIBUTES if a not in event]
    assert not missing, f"CloudEvent lacks {missing}: {event}"
    assert event["specversion"] == "1.0"
    assert event["datacontenttype"] == "application/json"
    uuid.UUID(event["id"])


def about(user_id: uuid.UUID | str, event_type: str | None = None) -> Callable[[dict[str, Any]], bool]:
    """Predicate: a CloudEvent whose subject is this user (and, when given, whose type is `event_type`)."""
    subject = str(user_id)
    return lambda e: e.get("subject") == subject and (event_type is None or e.get("type") == event_type)


async def publish(bootstrap: str, topic: str, events: Iterable[dict[str, Any]], *, key: str) -> None:
    """Sends the CloudEvents to `topic` under one `key` (so one partition), in order, waiting for each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topic, json.dumps(event).encode(), key=key.encode())
    finally:
        await producer.stop()


class TopicReader:
    """Consumes a topic from the beginning in its own consumer group and keeps every CloudEvent seen."""

    def __init__(self, bootstrap: str, topic: str):
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=f"test-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=1000,
            heartbeat_interval_ms=200,
        )
        self.events: list[dict[str, Any]] = []
        self.keys: list[bytes | None] = []

    def matching(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The events seen so far that match, in the order read."""
        return [e for e in self.events if predicate(e)]

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._consumer.stop()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, count: int = 1, timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """Waits until `count` events match; returns the matching ones."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            matching = self.matching(predicate)
            if len(matching) >= count:
                return matching
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return matching
            batch = await self._consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            for records in batch.values():
                for record in records:
                    try:
                        event = json.loads(record.value)
                    except ValueError:
                        continue  # a record that is not JSON (someone's probe) is not an event of ours
                    self.keys.append(record.key)
                    self.events.append(event)

    async def drain(self, seconds: float = 1.0) -> None:
        """Reads whatever else arrives for `seconds` (to prove that nothing more does)."""
        await self.wait_for(lambda e: False, timeout=seconds)
