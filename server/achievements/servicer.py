"""AchievementService transport: validate the request, map proto ⇄ domain, call a use case. Nothing else."""

from __future__ import annotations

from library.v1 import achievement_service_pb2 as pb
from library.v1 import achievement_service_pb2_grpc
from server.achievements import use_cases
from server.achievements.rules import (
    API_NAME_MAX_LEN,
    Definition,
    Status,
    is_valid_api_name,
    normalised_max_progress,
)
from server.core.auth import current_user_id, require_service
from server.core.deps import Deps
from server.core.protoconv import timestamp
from server.core.validation import Validator

MAX_PRODUCTS_PER_LISTING = 50
MAX_DEFINITIONS_PER_UPSERT = 1000
DISPLAY_NAME_MAX_LEN = 256
DESCRIPTION_MAX_LEN = 4096
URL_MAX_LEN = 2048


def _api_name(v: Validator, field: str, value: str) -> str:
    if not value:
        v.fail(field, "is required")
    elif not is_valid_api_name(value):
        v.fail(field, f"must be 1-{API_NAME_MAX_LEN} characters of [A-Za-z0-9_.-]")
    return value


def _status_pb(status: Status) -> pb.AchievementStatus:
    return pb.AchievementStatus(
        product_id=status.product_id,
        achievement_api_name=status.api_name,
        display_name=status.display_name,
        description=status.description,
        hidden=status.hidden,
        icon_url=status.icon_url,
        icon_locked_url=status.icon_locked_url,
        progress=status.progress,
        max_progress=status.max_progress,
        progress_percentage=status.progress_percentage,
        is_unlocked=status.is_unlocked,
        unlocked_at=timestamp(status.unlocked_at),
        global_unlock_rate=status.global_unlock_rate,
    )


class AchievementServiceServicer(achievement_service_pb2_grpc.AchievementServiceServicer):
    def __init__(self, deps: Deps):
        self._deps = deps

    async def ListAchievementStatuses(self, request: pb.ListAchievementStatusesRequest, context):
        user_id = current_user_id()
        v = Validator()
        product_ids = list(
            dict.fromkeys(v.uuids("product_ids", request.product_ids, max_items=MAX_PRODUCTS_PER_LISTING))
        )
        if not product_ids and not v.violations:
            v.fail("product_ids", "is required")
        page_size = v.page_size(request.page_size)
        v.check()
        page = await use_cases.list_statuses(self._deps, user_id, product_ids, page_size, request.page_token)
        return pb.ListAchievementStatusesResponse(
            achievement_statuses=[_status_pb(s) for s in page.statuses],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def UpdateAchievementProgress(self, request: pb.UpdateAchievementProgressRequest, context):
        user_id = current_user_id()
        v = Validator()
        product_id = v.uuid("product_id", request.product_id)
        api_name = _api_name(v, "achievement_api_name", request.achievement_api_name)
        progress = v.non_negative("progress", request.progress)
        request_id = v.request_id(request.request_id)
        v.check()
        result = await use_cases.update_progress(
            self._deps, user_id, product_id, api_name, progress, request_id
        )
        return pb.UpdateAchievementProgressResponse(
            achievement_status=_status_pb(result.status), newly_unlocked=result.newly_unlocked
        )

    async def UpsertAchievementDefinitions(self, request: pb.UpsertAchievementDefinitionsRequest, context):
        require_service()
        v = Validator()
        product_id = v.uuid("product_id", request.product_id)
        if not 1 <= len(request.definitions) <= MAX_DEFINITIONS_PER_UPSERT:
            v.fail("definitions", f"must have 1-{MAX_DEFINITIONS_PER_UPSERT} entries")
        seen: set[str] = set()
        definitions = []
        for i, d in enumerate(request.definitions):
            field = f"definitions[{i}]"
            api_name = _api_name(v, f"{field}.api_name", d.api_name)
            if api_name in seen:
                v.fail(f"{field}.api_name", "is a duplicate within the request")
            seen.add(api_name)
            v.text(f"{field}.display_name", d.display_name, max_len=DISPLAY_NAME_MAX_LEN, required=True)
            v.text(f"{field}.description", d.description, max_len=DESCRIPTION_MAX_LEN)
            v.text(f"{field}.icon_url", d.icon_url, max_len=URL_MAX_LEN)
            v.text(f"{field}.icon_locked_url", d.icon_locked_url, max_len=URL_MAX_LEN)
            v.non_negative(f"{field}.max_progress", d.max_progress)
            definitions.append(
                Definition(
                    product_id=request.product_id,
                    api_name=api_name,
                    display_name=d.display_name,
                    description=d.description,
                    hidden=d.hidden,
                    max_progress=normalised_max_progress(d.max_progress),
                    icon_url=d.icon_url,
                    icon_locked_url=d.icon_locked_url,
                    display_order=d.display_order,
                )
            )
        v.check()
        count = await use_cases.upsert_definitions(self._deps, product_id, definitions)
        return pb.UpsertAchievementDefinitionsResponse(upserted_count=count)
