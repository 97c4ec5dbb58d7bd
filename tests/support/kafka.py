"""Reading what the service published, the way a peer service would: a real Kafka consumer."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

from server.core.events.cloudevents import REQUIRED_ATTRIBUTES


def assert_cloud_event(event: dict[str, Any]) -> None:
    missing = [a for a in REQUIRED_ATTRIBUTES if a not in event]
    assert not missing, f"CloudEvent lacks {missing}: {event}"
    assert event["specversion"] == "1.0"
    assert event["datacontenttype"] == "application/json"
    uuid.UUID(event["id"])


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
            matching = [e for e in self.events if predicate(e)]
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
