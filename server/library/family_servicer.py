"""The family-sharing RPCs of LibraryService (a mixin of `LibraryServiceServicer`): map proto ⇄ domain, call a
use case. Nothing else."""

from __future__ import annotations

from library.v1 import family_sharing_pb2 as pb
from server.core.auth import current_user_id
from server.core.deps import Deps
from server.core.protoconv import timestamp
from server.core.validation import page_size, parse_uuid
from server.library import family_rules as rules
from server.library import family_use_cases as use_cases
from server.library.family_views import FamilyLinkView

_Status = pb.FamilyLink.Status
_EndReason = pb.FamilyLink.EndReason
_Role = pb.ListFamilyLinksRequest.Role
_SIDES = {_Role.OWNER: rules.Side.OWNER, _Role.SHARED_USER: rules.Side.SHARED_USER}


def _link(view: FamilyLinkView) -> pb.FamilyLink:
    return pb.FamilyLink(
        link_id=str(view.link_id),
        owner_user_id=str(view.owner_user_id),
        shared_user_id=str(view.shared_user_id),
        status=_Status.Value(view.status.upper()),
        end_reason=_EndReason.Value(view.end_reason.upper()) if view.end_reason else 0,
        created_at=timestamp(view.created_at),
        updated_at=timestamp(view.updated_at),
        accepted_at=timestamp(view.accepted_at),
    )


class FamilySharingRpcs:
    _deps: Deps

    async def ListFamilyLinks(
        self, request: pb.ListFamilyLinksRequest, context
    ) -> pb.ListFamilyLinksResponse:
        page = await use_cases.list_links(
            self._deps,
            current_user_id(),
            side=_SIDES.get(request.role),
            status=_Status.Name(request.status).lower() if request.status else None,
            page_size=page_size(request.page_size),
            page_token=request.page_token,
        )
        return pb.ListFamilyLinksResponse(
            links=[_link(link) for link in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def CreateFamilyLink(
        self, request: pb.CreateFamilyLinkRequest, context
    ) -> pb.CreateFamilyLinkResponse:
        link = await use_cases.create_link(
            self._deps, current_user_id(), parse_uuid(request.shared_user_id), parse_uuid(request.request_id)
        )
        return pb.CreateFamilyLinkResponse(link=_link(link))

    async def _change(self, request, action: rules.Action) -> pb.FamilyLink:
        link = await use_cases.change_link(
            self._deps, current_user_id(), parse_uuid(request.link_id), action, parse_uuid(request.request_id)
        )
        return _link(link)

    async def AcceptFamilyLink(
        self, request: pb.AcceptFamilyLinkRequest, context
    ) -> pb.AcceptFamilyLinkResponse:
        return pb.AcceptFamilyLinkResponse(link=await self._change(request, rules.Action.ACCEPT))

    async def DeclineFamilyLink(
        self, request: pb.DeclineFamilyLinkRequest, context
    ) -> pb.DeclineFamilyLinkResponse:
        return pb.DeclineFamilyLinkResponse(link=await self._change(request, rules.Action.DECLINE))

    async def CancelFamilyLink(
        self, request: pb.CancelFamilyLinkRequest, context
    ) -> pb.CancelFamilyLinkResponse:
        return pb.CancelFamilyLinkResponse(link=await self._change(request, rules.Action.CANCEL))

    async def RevokeFamilyLink(
        self, request: pb.RevokeFamilyLinkRequest, context
    ) -> pb.RevokeFamilyLinkResponse:
        return pb.RevokeFamilyLinkResponse(link=await self._change(request, rules.Action.REVOKE))
