"""/v1/campaigns"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from crm.campaigns import service
from crm.campaigns.models import Campaign
from crm.campaigns.repository import SORT_KEYS
from crm.campaigns.schemas import (
    CampaignCreate,
    CampaignPage,
    CampaignRead,
    CampaignStatus,
    CampaignUpdate,
    MemberCreate,
    MemberPage,
    MemberRead,
    MemberResponse,
)
from crm.fields import CampaignIdPath, MemberIdPath
from cxkit import keyset
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader
from cxkit.http.deps import SessionDep
from cxkit.http.etag import etag_for
from cxkit.http.idempotency import IdempotencyDep
from cxkit.http.pagination import PageParams, page_params
from cxkit.http.params import IfMatch
from cxkit.http.problems import problem_responses
from cxkit.http.routing import GatedRouter

router = GatedRouter(prefix="/campaigns", tags=["campaigns"], route_class=TypedRoute)


async def _read(session: AsyncSession, campaign: Campaign) -> CampaignRead:
    stats = await service.campaign_stats(session, [campaign.id])
    return CampaignRead.model_validate({**_columns(campaign), "stats": stats[campaign.id]})


def _columns(campaign: Campaign) -> dict[str, object]:
    return {c.key: getattr(campaign, c.key) for c in Campaign.__table__.columns}


@router.post(
    "",
    status_code=201,
    summary="Create a campaign",
    description="A marketing campaign (email, event, webinar, ads...) with a unique name, dates and budget. "
    "Leads and customers created with its `campaign_id` remember it and count as members that responded. Needs `write`.",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_campaign(body: CampaignCreate, session: SessionDep, idem: IdempotencyDep) -> ModelResponse[CampaignRead]:
    async def operation() -> ModelResponse[CampaignRead]:
        campaign = await service.create_campaign(session, body)
        return json_response(
            await _read(session, campaign),
            201,
            headers={"ETag": etag_for(campaign.version), "Location": f"/v1/campaigns/{campaign.id}"},
        )

    return await idem.execute(session, operation)


@router.get(
    "",
    summary="List campaigns",
    description="With their stats (members, responses, response rate, leads and customers brought in, won amount). "
    "Filter by `status`; `sort`: `created_at` or `name`, `-` for descending (default `-created_at`). Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_campaigns(
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    status: CampaignStatus | None = None,
    sort: Annotated[
        str, Query(pattern=keyset.sort_pattern(SORT_KEYS), description="Sort key, `-` for descending.")
    ] = "-created_at",
) -> ModelResponse[CampaignPage]:
    rows, cursor = await service.list_campaigns(session, status, sort, page)
    stats = await service.campaign_stats(session, [c.id for c in rows])
    items = [CampaignRead.model_validate({**_columns(c), "stats": stats[c.id]}) for c in rows]
    return json_response(CampaignPage(items=items, next_cursor=cursor))


@router.get(
    "/{campaign_id}",
    summary="Get a campaign",
    description="One campaign with its stats and `ETag`; `response_rate` = members that responded / members. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_campaign(campaign_id: CampaignIdPath, session: SessionDep, _: Reader) -> ModelResponse[CampaignRead]:
    campaign = await service.get_campaign(session, campaign_id)
    return json_response(await _read(session, campaign), headers={"ETag": etag_for(campaign.version)})


@router.patch(
    "/{campaign_id}",
    summary="Change a campaign",
    description="Change its details or status (planned, active, completed, aborted). Honours `If-Match`. Needs `write`.",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def update_campaign(
    campaign_id: CampaignIdPath, body: CampaignUpdate, session: SessionDep, idem: IdempotencyDep, if_match: IfMatch = None
) -> ModelResponse[CampaignRead]:
    async def operation() -> ModelResponse[CampaignRead]:
        campaign = await service.update_campaign(session, campaign_id, body, if_match)
        return json_response(await _read(session, campaign), headers={"ETag": etag_for(campaign.version)})

    return await idem.execute(session, operation)


@router.delete(
    "/{campaign_id}",
    status_code=204,
    summary="Delete a campaign",
    description="Deletes the campaign and its member list; refused (409) once leads or customers came from it, whose "
    "attribution would be lost (set its status instead). Honours `If-Match`. Needs `write`.",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def delete_campaign(
    campaign_id: CampaignIdPath, session: SessionDep, idem: IdempotencyDep, if_match: IfMatch = None
) -> Response:
    async def operation() -> Response:
        await service.delete_campaign(session, campaign_id, if_match)
        return Response(status_code=204)

    return await idem.execute(session, operation)


@router.post(
    "/{campaign_id}/members",
    status_code=201,
    summary="Add a member to a campaign",
    description="A customer (`customer_id`; a merged duplicate's id resolves to its survivor) or a lead (`lead_id`). "
    "With `response`, the member has already responded. Already a member: 409. Needs `write`.",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def add_member(
    campaign_id: CampaignIdPath, body: MemberCreate, session: SessionDep, idem: IdempotencyDep
) -> ModelResponse[MemberRead]:
    async def operation() -> ModelResponse[MemberRead]:
        member = await service.add_member(session, campaign_id, body)
        return json_response(MemberRead.of(member), 201, headers={"Location": f"/v1/campaigns/{campaign_id}/members/{member.id}"})

    return await idem.execute(session, operation)


@router.get(
    "/{campaign_id}/members",
    summary="List a campaign's members",
    description="In the order they were added; `responded=true|false` filters. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def list_members(
    campaign_id: CampaignIdPath,
    session: SessionDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    responded: bool | None = None,
) -> ModelResponse[MemberPage]:
    rows, cursor = await service.list_members(session, campaign_id, responded, page)
    return json_response(MemberPage(items=[MemberRead.of(m) for m in rows], next_cursor=cursor))


@router.get(
    "/{campaign_id}/members/{member_id}",
    summary="Get a campaign member",
    description="One member and whether, when and how they responded. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_member(
    campaign_id: CampaignIdPath, member_id: MemberIdPath, session: SessionDep, _: Reader
) -> ModelResponse[MemberRead]:
    return json_response(MemberRead.of(await service.get_member(session, campaign_id, member_id)))


@router.post(
    "/{campaign_id}/members/{member_id}/response",
    summary="Record a member's response",
    description="Marks the member as responded (opened, clicked, registered, attended...). The first response time is "
    "kept; a later call updates what the response was. Needs `write`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def record_response(
    campaign_id: CampaignIdPath, member_id: MemberIdPath, body: MemberResponse, session: SessionDep, idem: IdempotencyDep
) -> ModelResponse[MemberRead]:
    async def operation() -> ModelResponse[MemberRead]:
        return json_response(MemberRead.of(await service.record_response(session, campaign_id, member_id, body)))

    return await idem.execute(session, operation)


@router.delete(
    "/{campaign_id}/members/{member_id}",
    status_code=204,
    summary="Remove a member from a campaign",
    description="The member leaves the campaign (and its response with it). Needs `write`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def remove_member(
    campaign_id: CampaignIdPath, member_id: MemberIdPath, session: SessionDep, idem: IdempotencyDep
) -> Response:
    async def operation() -> Response:
        await service.remove_member(session, campaign_id, member_id)
        return Response(status_code=204)

    return await idem.execute(session, operation)
