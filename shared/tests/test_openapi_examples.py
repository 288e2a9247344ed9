"""The OpenAPI document's schema examples keep their nulls (FastAPI's encoding drops them) and
are checked against their models."""

from __future__ import annotations

from typing import Generic, TypeVar

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from cxkit.http.examples import documented_models, invalid_examples, keep_example_nulls

T = TypeVar("T")


class Window(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"since": "2026-11-01T00:00:00Z", "until": None}]})

    since: str | None
    until: str | None


class Report(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"n": 0, "score": None, "window": {"since": None, "until": None}}]})

    n: int
    score: float | None
    window: Window


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class Change(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Ada", "phone": None}]})

    name: str | None = None
    phone: str | None = Field(None, description="null clears it")


class Broken(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"count": "many"}]})

    count: int


def app_with_examples(*, keep: bool) -> FastAPI:
    app = FastAPI()
    if keep:
        keep_example_nulls(app)

    @app.get("/report", response_model=Report)
    async def report() -> None: ...

    @app.get("/windows", response_model=Page[Window])
    async def windows() -> None: ...

    @app.patch("/thing", response_model=Report, responses={409: {"model": Broken}})
    async def change(body: Change) -> None: ...

    return app


def test_the_examples_keep_their_nulls() -> None:
    schemas = app_with_examples(keep=True).openapi()["components"]["schemas"]
    assert schemas["Report"]["examples"] == [{"n": 0, "score": None, "window": {"since": None, "until": None}}]
    assert schemas["Window"]["examples"] == [{"since": "2026-11-01T00:00:00Z", "until": None}]
    assert schemas["Change"]["examples"] == [{"name": "Ada", "phone": None}]


def test_fastapi_alone_still_drops_them() -> None:
    """What the kit works around (fastapi/fastapi#5559): when this fails, FastAPI keeps the
    nulls itself and `keep_example_nulls` can go."""
    schemas = app_with_examples(keep=False).openapi()["components"]["schemas"]
    assert schemas["Report"]["examples"] == [{"n": 0, "window": {}}]
    assert sorted(invalid_examples(app_with_examples(keep=False))) == [
        "Broken: count: Input should be a valid integer, unable to parse string as an integer",
        "Report: score: Field required",
        "Window: until: Field required",
    ]


def test_every_model_an_operation_takes_or_answers_is_found_with_the_models_inside() -> None:
    found = documented_models(app_with_examples(keep=True))
    assert set(found) == {"Report", "Window", "Page[Window]", "Change", "Broken"}
    assert found["Page[Window]"] is Page[Window]


def test_an_example_its_model_refuses_is_reported() -> None:
    assert invalid_examples(app_with_examples(keep=True)) == [
        "Broken: count: Input should be a valid integer, unable to parse string as an integer"
    ]


def test_examples_with_no_model_to_check_them_are_reported() -> None:
    app = app_with_examples(keep=True)
    document = app.openapi()
    document["components"]["schemas"]["Orphan"] = {"title": "Orphan", "type": "object", "examples": [{"a": 1}]}
    assert "Orphan: no model found to check its examples against" in invalid_examples(app)
