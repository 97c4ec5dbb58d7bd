"""AchievementService transport: map proto ⇄ domain, call a use case. Nothing else.

The contract's field rules are enforced by the call pipeline; what is checked here spans entries
(duplicate api names, comma-separated product ids)."""

from __future__ import annotations

from library.v1 import achievement_service_pb2 as pb
from library.v1 import achievement_service_pb2_grpc
from server.achievements import use_cases
from server.achievements.rules import Definition, Status, normalised_max_progress
from server.core.auth import current_user_id, require_service
from server.core.deps import Deps
from server.core.protoconv import add_all, timestamp
from server.core.validation import Validator, page_size, parse_uuid

MAX_PRODUCTS_PER_LISTING = 50


def _status_fields(status: Status) -> dict:
    return {
        "product_id": status.product_id,
        "achievement_api_name": status.api_name,
        "display_name": status.display_name,
        "description": status.description,
        "hidden": status.hidden,
        "icon_url": status.icon_url,
        "icon_locked_url": status.icon_locked_url,
        "progress": status.progress,
        "max_progress": status.max_progress,
        "progress_percentage": status.progress_percentage,
        "is_unlocked": status.is_unlocked,
        "unlocked_at": timestamp(status.unlocked_at),
        "global_unlock_rate": status.global_unlock_rate,
    }


def _status_pb(status: Status) -> pb.AchievementStatus:
    return pb.AchievementStatus(**_status_fields(status))


class AchievementServiceServicer(achievement_service_pb2_grpc.AchievementServiceServicer):
    def __init__(self, deps: Deps):
        self._deps = deps

    async def ListAchievementStatuses(self, request: pb.ListAchievementStatusesRequest, context):
        user_id = current_user_id()
        v = Validator()
        product_ids = list(
            dict.fromkeys(v.uuids("product_ids", request.product_ids, max_items=MAX_PRODUCTS_PER_LISTING))
        )
        v.check()
        page = await use_cases.list_statuses(
            self._deps, user_id, product_ids, page_size(request.page_size), request.page_token
        )
        response = pb.ListAchievementStatusesResponse(
            next_page_token=page.next_page_token, total_size=page.total_size
        )
        add_all(response.achievement_statuses, page.statuses, _status_fields)
        return response

    async def UpdateAchievementProgress(self, request: pb.UpdateAchievementProgressRequest, context):
        user_id = current_user_id()
        result = await use_cases.update_progress(
            self._deps,
            user_id,
            parse_uuid(request.product_id),
            request.achievement_api_name,
            request.progress,
            parse_uuid(request.request_id),
        )
        return pb.UpdateAchievementProgressResponse(
            achievement_status=_status_pb(result.status), newly_unlocked=result.newly_unlocked
        )

    async def UpsertAchievementDefinitions(self, request: pb.UpsertAchievementDefinitionsRequest, context):
        require_service()
        v = Validator()
        seen: set[str] = set()
        definitions = []
        for i, d in enumerate(request.definitions):
            if d.api_name in seen:
                v.fail(f"definitions[{i}].api_name", "is a duplicate within the request")
            seen.add(d.api_name)
            definitions.append(
                Definition(
                    product_id=request.product_id,
                    api_name=d.api_name,
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
        count = await use_cases.upsert_definitions(self._deps, parse_uuid(request.product_id), definitions)
        return pb.UpsertAchievementDefinitionsResponse(upserted_count=count)
