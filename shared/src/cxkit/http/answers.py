"""What a route answers, stated once: its return annotation.

A JSON route is written `async def get_customer(...) -> ModelResponse[CustomerRead]` on a router
made with `route_class=TypedRoute`, and answers `json_response(model)`. The annotation is
the only declaration: `TypedRoute` takes the OpenAPI response model from it (a separate
`response_model=` is refused), and checks on each answer that the model serialized is that
one, so the documentation and the bytes sent cannot drift apart. The body is serialized once,
by pydantic's Rust encoder; nothing is validated again on the way out (FastAPI's own path
would validate the returned model against the response model first).

`answer_drift(app)` lists the routes whose documented answer could differ from what they
send; each service's tests assert it is empty."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from types import UnionType
from typing import Any, Generic, TypeVar, Union, get_args, get_origin

from fastapi import FastAPI
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.utils import get_typed_return_annotation
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from cxkit.http.responses import JSONBytesResponse, ReplayedResponse

M = TypeVar("M", bound=BaseModel)
# Statuses whose answer has no body (nothing to document or to drift).
_BODYLESS = frozenset({204, 304})


class ModelResponse(JSONBytesResponse, Generic[M]):
    """A JSON answer holding one `M`, serialized straight to bytes. `model` is the class that
    was serialized (what `TypedRoute` checks against the route's annotation)."""

    def __init__(self, body: M, status_code: int = 200, headers: dict[str, str] | None = None) -> None:
        self.model: type[BaseModel] = body.__class__
        # model_dump_json() without the str round trip: the same bytes, one copy fewer.
        super().__init__(body.__pydantic_serializer__.to_json(body), status_code=status_code, headers=headers)


def json_response(model: M, status_code: int = 200, headers: dict[str, str] | None = None) -> ModelResponse[M]:
    """The answer `model`, for a route annotated `-> ModelResponse[type of model]`."""
    return ModelResponse(model, status_code, headers)


class AnswerDrift(TypeError):
    """A route answered with another model than the one its annotation documents."""


def answer_model(annotation: Any) -> type[BaseModel] | None:
    """The model of `ModelResponse[X]`, also inside a union with the problem answers a route
    returns itself (`ModelResponse[Health] | JSONBytesResponse`); None for any other annotation."""
    if get_origin(annotation) is ModelResponse:
        model: type[BaseModel] = get_args(annotation)[0]
        return model
    if get_origin(annotation) in (Union, UnionType):
        models = [answer_model(member) for member in get_args(annotation)]
        typed = [model for model in models if model is not None]
        if len(typed) == 1:
            return typed[0]
    return None


class TypedRoute(APIRoute):
    """An APIRoute whose response model is the `X` of its `-> ModelResponse[X]` annotation."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        model = answer_model(get_typed_return_annotation(endpoint))
        if model is not None:
            if not isinstance(kwargs.get("response_model", DefaultPlaceholder(None)), DefaultPlaceholder):
                raise TypeError(
                    f"{endpoint.__qualname__}: its answer is stated by the annotation ModelResponse[{model.__name__}]; "
                    "drop response_model="
                )
            kwargs["response_model"] = model
        self.answer_model = model
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        model = self.answer_model
        if model is None:
            return handler
        name = self.endpoint.__qualname__

        async def checked(request: Request) -> Response:
            response = await handler(request)
            if isinstance(response, ModelResponse):
                if response.model is not model:
                    raise AnswerDrift(f"{name} is documented to answer {model.__name__}, sent {response.model.__name__}")
            elif response.status_code < 300 and not isinstance(response, ReplayedResponse):
                raise AnswerDrift(f"{name} is documented to answer {model.__name__}, sent an untyped {response.status_code}")
            return response

        return checked


def answer_drift(app: FastAPI) -> list[str]:
    """Every documented operation whose answer could drift from its documentation: one that
    declares a response model apart from what its annotation says it returns, or one that
    sends a JSON body it does not document (no model, no response class of its own)."""
    drift = []
    for route in iter_route_contexts(app.router.routes):
        original = route.original_route
        if not isinstance(original, APIRoute) or not route.include_in_schema:
            continue
        operation = f"{','.join(sorted(route.methods))} {route.path}"
        annotation = get_typed_return_annotation(original.endpoint)
        documented = route.response_model
        if documented is not None:
            model = answer_model(annotation)
            if model is not None and not isinstance(original, TypedRoute):
                drift.append(f"{operation}: annotated ModelResponse[{model.__name__}] on a router without TypedRoute")
            elif documented is not model and documented is not annotation:
                drift.append(f"{operation}: documents {_name(documented)} but is annotated to return {_name(annotation)}")
        elif isinstance(route.response_class, DefaultPlaceholder) and route.status_code not in _BODYLESS:
            drift.append(f"{operation}: sends JSON ({_name(annotation)}) with no documented model")
    return drift


def _name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)
