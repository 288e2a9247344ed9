"""One statement of what a route answers (cxkit.http.answers): the annotation documents the
model, TypedRoute refuses a second statement and checks every answer, answer_drift finds the
routes that could drift."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel
from starlette.responses import Response

from cxkit.http.answers import AnswerDrift, ModelResponse, TypedRoute, answer_drift, json_response
from cxkit.http.csv_export import CsvExport
from cxkit.http.problems import problem_response
from cxkit.http.responses import JSONBytesResponse, ReplayedResponse


class Thing(BaseModel):
    id: int
    name: str


class Other(BaseModel):
    id: int


def _typed_app() -> FastAPI:
    router = APIRouter(route_class=TypedRoute)

    @router.post("/things", status_code=201)
    async def create_thing() -> ModelResponse[Thing]:
        return json_response(Thing(id=1, name="a"), 201, headers={"Location": "/things/1", "ETag": '"1"'})

    @router.get("/things/{thing_id}")
    async def get_thing(thing_id: int) -> ModelResponse[Thing] | JSONBytesResponse:
        if thing_id == 404:
            return problem_response(404, "Not found", slug="not-found")
        if thing_id == 2:  # drift: documented Thing, sends Other
            return json_response(Other(id=2))  # type: ignore[return-value]
        if thing_id == 3:  # drift: a 2xx body that is no model at all
            return JSONBytesResponse({"id": 3})
        if thing_id == 4:  # an idempotent retry: the stored first answer
            return ReplayedResponse(b'{"id":4,"name":"d"}', media_type="application/json")
        return json_response(Thing(id=thing_id, name="a"))

    app = FastAPI()
    app.include_router(router, prefix="/v1")
    return app


def test_the_annotation_is_what_openapi_documents_and_the_answer_keeps_status_and_headers() -> None:
    app = _typed_app()
    spec = app.openapi()
    created = spec["paths"]["/v1/things"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    read = spec["paths"]["/v1/things/{thing_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert created == read == {"$ref": "#/components/schemas/Thing"}
    assert answer_drift(app) == []


async def test_typed_route_sends_the_documented_model_and_refuses_another() -> None:
    transport = httpx.ASGITransport(app=_typed_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        created = await client.post("/v1/things")
        assert created.status_code == 201
        assert created.json() == {"id": 1, "name": "a"}
        assert created.headers["location"] == "/things/1" and created.headers["etag"] == '"1"'
        assert created.headers["content-type"] == "application/json"
        assert (await client.get("/v1/things/1")).json() == {"id": 1, "name": "a"}
        assert (await client.get("/v1/things/404")).status_code == 404
        assert (await client.get("/v1/things/4")).json() == {"id": 4, "name": "d"}
        with pytest.raises(AnswerDrift, match="get_thing is documented to answer Thing, sent Other"):
            await client.get("/v1/things/2")
        with pytest.raises(AnswerDrift, match="sent an untyped 200"):
            await client.get("/v1/things/3")


def test_typed_route_refuses_a_second_statement_of_the_model() -> None:
    router = APIRouter(route_class=TypedRoute)
    with pytest.raises(TypeError, match="drop response_model="):

        @router.get("/things", response_model=Thing)
        async def get_thing() -> ModelResponse[Thing]:
            return json_response(Thing(id=1, name="a"))


def test_answer_drift_names_every_route_that_could_drift() -> None:
    plain = APIRouter()

    @plain.get("/declared", response_model=Thing)  # the old way: a model declared, bytes sent apart
    async def declared() -> Response:
        return JSONBytesResponse({"id": 1})

    @plain.get("/mismatched", response_model=Thing)
    async def mismatched() -> Other:
        return Other(id=1)

    @plain.get("/untyped")
    async def untyped() -> Response:
        return JSONBytesResponse({"id": 1})

    @plain.get("/unchecked", response_model=Thing)  # typed, but no TypedRoute checks it
    async def unchecked() -> ModelResponse[Thing]:
        return json_response(Thing(id=1, name="a"))

    @plain.get("/native")  # FastAPI validates and serializes the returned model itself
    async def native() -> Thing:
        return Thing(id=1, name="a")

    @plain.delete("/gone", status_code=204)
    async def gone() -> Response:
        return Response(status_code=204)

    @plain.get("/export", response_class=CsvExport)
    async def export() -> Response:
        return Response(b"id\r\n", media_type="text/csv")

    @plain.get("/hidden", include_in_schema=False)
    async def hidden() -> Response:
        return JSONBytesResponse({})

    app = _typed_app()
    app.include_router(plain)
    assert answer_drift(app) == [
        "GET /declared: documents Thing but is annotated to return Response",
        "GET /mismatched: documents Thing but is annotated to return Other",
        "GET /untyped: sends JSON (Response) with no documented model",
        "GET /unchecked: annotated ModelResponse[Thing] on a router without TypedRoute",
    ]
