"""/v1/pipelines"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import Request
from starlette.responses import Response

from crm.fields import PipelineIdPath
from crm.pipelines import service
from crm.pipelines.schemas import PipelineCreate, PipelinePage, PipelineRead, PipelineUpdate
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Admin, Reader
from cxkit.http.deps import SessionDep
from cxkit.http.etag import IF_NONE_MATCH_PARAMETER, NOT_MODIFIED_RESPONSE, NOT_MODIFIED_TEXT, etag_for, unchanged
from cxkit.http.idempotency import IdempotencyDep
from cxkit.http.pagination import PageParams, page_params
from cxkit.http.params import IfMatch
from cxkit.http.problems import problem_responses
from cxkit.http.routing import GatedRouter

router = GatedRouter(prefix="/pipelines", tags=["pipelines"], route_class=TypedRoute)


def _answer(pipeline: object, stages: list[object], status: int = 200) -> ModelResponse[PipelineRead]:
    body = PipelineRead.of(pipeline, stages)
    headers = {"ETag": etag_for(body.version)}
    if status == 201:
        headers["Location"] = f"/v1/pipelines/{body.id}"
    return json_response(body, status, headers=headers)


@router.post(
    "",
    status_code=201,
    summary="Create a pipeline",
    description="A sales pipeline with its stages in order, each with a win `probability` (0..1) that weights "
    "the forecast; exactly one won stage (probability 1) and one lost stage (probability 0). "
    "`is_default: true` makes it the pipeline of deals created without one. Needs `admin`.",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_pipeline(
    body: PipelineCreate, session: SessionDep, idem: IdempotencyDep, _: Admin
) -> ModelResponse[PipelineRead]:
    async def operation() -> ModelResponse[PipelineRead]:
        pipeline, stages = await service.create_pipeline(session, body)
        return _answer(pipeline, stages, 201)

    return await idem.execute(session, operation)


@router.get(
    "",
    summary="List pipelines",
    description="By name, with their stages. The built-in default pipeline (Qualification 0.1, Needs analysis 0.2, "
    "Proposal 0.5, Negotiation 0.8, Closed won 1.0, Closed lost 0) exists from the first call. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def list_pipelines(
    session: SessionDep, _: Reader, page: Annotated[PageParams, Depends(page_params)]
) -> ModelResponse[PipelinePage]:
    rows, cursor = await service.list_pipelines(session, page)
    await session.commit()  # the default pipeline may just have been created
    return json_response(PipelinePage(items=[PipelineRead.of(p, s) for p, s in rows], next_cursor=cursor))


@router.get(
    "/{pipeline_id}",
    summary="Get a pipeline",
    description=f"One pipeline with its ordered stages and its `ETag`. {NOT_MODIFIED_TEXT} Needs `read`.",
    responses=problem_responses(401, 403, 404, 422) | NOT_MODIFIED_RESPONSE,
    openapi_extra=IF_NONE_MATCH_PARAMETER,
)
async def get_pipeline(
    pipeline_id: PipelineIdPath, request: Request, session: SessionDep, _: Reader
) -> ModelResponse[PipelineRead] | Response:
    pipeline, stages = await service.get_pipeline(session, pipeline_id)
    return unchanged(request, pipeline.version) or _answer(pipeline, stages)


@router.patch(
    "/{pipeline_id}",
    summary="Change a pipeline",
    description="Rename it, make it the default, or replace its stages (kept stages carry their `id`; a stage "
    "left out is removed, which is refused with 409 while deals are in it). Honours `If-Match`. Needs `admin`.",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def update_pipeline(
    pipeline_id: PipelineIdPath,
    body: PipelineUpdate,
    session: SessionDep,
    idem: IdempotencyDep,
    _: Admin,
    if_match: IfMatch = None,
) -> ModelResponse[PipelineRead]:
    async def operation() -> ModelResponse[PipelineRead]:
        pipeline, stages = await service.update_pipeline(session, pipeline_id, body, if_match)
        return _answer(pipeline, stages)

    return await idem.execute(session, operation)


@router.delete(
    "/{pipeline_id}",
    status_code=204,
    summary="Delete a pipeline",
    description="Only a pipeline without deals that is not the default (409 otherwise). Honours `If-Match`. Needs `admin`.",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def delete_pipeline(
    pipeline_id: PipelineIdPath, session: SessionDep, idem: IdempotencyDep, _: Admin, if_match: IfMatch = None
) -> Response:
    async def operation() -> Response:
        await service.delete_pipeline(session, pipeline_id, if_match)
        return Response(status_code=204)

    return await idem.execute(session, operation)
