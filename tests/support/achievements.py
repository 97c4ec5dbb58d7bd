"""Helpers of the achievement tests: ownership grants, definitions, and what the user's stream received."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from library.v1 import achievement_service_pb2 as pb
from server.core.uow import notification_stream
from tests.support.auth import service_metadata

UNLOCKED = "com.platform.library.achievement.unlocked.v1"


def achievement(api_name: str, *, max_progress: int = 0, hidden: bool = False, order: int = 0):
    return pb.AchievementDefinition(
        api_name=api_name,
        display_name=f"{api_name} name",
        description=f"{api_name} description",
        hidden=hidden,
        max_progress=max_progress,
        icon_url=f"https://cdn.example/{api_name}.png",
        icon_locked_url=f"https://cdn.example/{api_name}-locked.png",
        display_order=order,
    )


async def define(stub, product_id: uuid.UUID, *definitions: pb.AchievementDefinition) -> None:
    """UpsertAchievementDefinitions as the catalog service would call it (service role)."""
    await stub.UpsertAchievementDefinitions(
        pb.UpsertAchievementDefinitionsRequest(product_id=str(product_id), definitions=definitions),
        metadata=service_metadata(),
    )


async def notifications(redis, user_id: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
    entries = await redis.xrange(notification_stream(user_id))
    return [(e[1][b"type"].decode(), json.loads(e[1][b"payload"])) for e in entries]


async def wait_notifications(redis, user_id: uuid.UUID, count: int, timeout: float = 10.0):
    """The user's notifications once at least `count` arrived (or whatever arrived by the timeout)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        seen = await notifications(redis, user_id)
        if len(seen) >= count or asyncio.get_running_loop().time() > deadline:
            return seen
        await asyncio.sleep(0.1)
