"""The OpenAPI document's schema examples as the models give them, nulls included.

FastAPI encodes the finished document with `exclude_none=True` (fastapi/fastapi#5559, still
open in the FastAPI this project pins), which also drops every `null` inside the examples: a
documented answer then lacks its nullable fields (`"erased_at": null`, `"filters": {"survey_id":
null, ...}`) and no longer validates against its own schema, and a client generated or mocked
from the document gets objects the API never sends. `keep_example_nulls` puts each model's own
examples back once FastAPI has built the document; `invalid_examples` lists the examples that
do not validate against their model, for a contract test."""

from __future__ import annotations

import typing
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python


def _models_in(annotation: Any, seen: set[type[BaseModel]]) -> None:
    """The models an annotation names, and the models their fields name, into `seen`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in seen:
            seen.add(annotation)
            for field in annotation.model_fields.values():
                _models_in(field.annotation, seen)
        return
    for argument in typing.get_args(annotation):
        _models_in(argument, seen)


def _operation_annotations(route: APIRoute) -> Iterator[Any]:
    yield route.response_model
    for body in route.dependant.body_params:
        yield body.field_info.annotation
    for answer in (route.responses or {}).values():
        if isinstance(answer, dict) and answer.get("model") is not None:
            yield answer["model"]


def documented_models(app: FastAPI) -> dict[str, type[BaseModel]]:
    """Every model an operation takes or answers (bodies, response models, the `model` of a
    `responses=` entry) and the models inside them, by the title of their schema (which the
    document's component schemas carry). A title two models share is left out."""
    models: set[type[BaseModel]] = set()
    for context in iter_route_contexts(app.router.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and route.include_in_schema:
            for annotation in _operation_annotations(route):
                _models_in(annotation, models)
    by_title: dict[str, list[type[BaseModel]]] = defaultdict(list)
    for model in models:
        by_title[model.model_json_schema().get("title", model.__name__)].append(model)
    return {title: found[0] for title, found in by_title.items() if len(found) == 1}


def _model_examples(model: type[BaseModel]) -> list[Any] | None:
    examples = model.model_json_schema().get("examples")
    return None if examples is None else to_jsonable_python(examples)


def keep_example_nulls(app: FastAPI) -> None:
    """After FastAPI builds the document, each component schema's `examples` are the ones its
    model gives, with their nulls."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            models = documented_models(app)
            for schema in document.get("components", {}).get("schemas", {}).values():
                model = models.get(schema.get("title", ""))
                if model is not None and "examples" in schema:
                    examples = _model_examples(model)
                    if examples is not None:
                        schema["examples"] = examples
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def invalid_examples(app: FastAPI) -> list[str]:
    """Each example of the document's component schemas that its model refuses, as
    `<schema>: <the first error>`, and each schema with examples but no model to check them
    against; empty when every example is a valid instance of its model."""
    models = documented_models(app)
    refused = []
    for name, schema in app.openapi().get("components", {}).get("schemas", {}).items():
        model = models.get(schema.get("title", ""))
        if model is None:
            if schema.get("examples"):
                refused.append(f"{name}: no model found to check its examples against")
            continue
        for example in schema.get("examples", []):
            try:
                model.model_validate(example, by_alias=True, by_name=True)  # a read model may validate from attributes
            except ValidationError as error:
                first = error.errors()[0]
                refused.append(f"{name}: {'.'.join(map(str, first['loc']))}: {first['msg']}")
    return refused
