"""RFC 9457 problem+json: typed business errors and the handlers that render every error."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from cxkit.db import database_error_cause, is_database_busy, is_database_unavailable
from cxkit.http.responses import JSONBytesResponse
from cxkit.redaction import redact_path

log = logging.getLogger(__name__)
PROBLEM_TYPE_BASE = "https://cx.example.org/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
# Seconds a client is asked to wait while the database is away (a restart takes a few).
DATABASE_RETRY_AFTER_S = 5
# ... and after the database refused its transaction for now (a deadlock, a full lock table).
DATABASE_BUSY_RETRY_AFTER_S = 1
# Exceptions that may mean "the database is away" or "busy": each is checked with
# is_database_unavailable and is_database_busy, and is a 500 otherwise. Handled in the
# ExceptionMiddleware, so the error is not raised again to the server (which would log a second
# traceback).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.DBAPIError,
    sa_exc.TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
)


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(description="Where the problem is, e.g. ['body', 'email'].")
    msg: str
    type: str


class Problem(BaseModel):
    """The error body of every 4xx/5xx answer."""

    type: str = Field(examples=[PROBLEM_TYPE_BASE + "not-found"])
    title: str = Field(examples=["Not found"])
    status: int = Field(examples=[404])
    detail: str | None = Field(None, examples=["customer 3f1c... does not exist"])
    instance: str | None = None
    errors: list[FieldProblem] | None = None


class ProblemError(Exception):
    """Base of business errors; the handler renders it as problem+json."""

    status: int = 400
    title: str = "Bad request"
    slug: str = "bad-request"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def headers_for(self, request: Request) -> dict[str, str] | None:
        """The answer's headers; an error whose headers depend on the request overrides this."""
        return self.headers


class Unauthorized(ProblemError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(ProblemError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(ProblemError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(ProblemError):
    status, title, slug = 409, "Conflict", "conflict"


class PreconditionFailed(ProblemError):
    status, title, slug = 412, "Precondition failed", "precondition-failed"


class PreconditionRequired(ProblemError):
    status, title, slug = 428, "Precondition required", "precondition-required"


class PayloadTooLarge(ProblemError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class UnsupportedMediaType(ProblemError):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class Unprocessable(ProblemError):
    """Input that is well-formed but breaks a rule (the request can never succeed as sent)."""

    status, title, slug = 422, "Unprocessable content", "unprocessable"


def field_problem(loc: list[str | int], msg: str, kind: str = "value_error") -> Unprocessable:
    """A 422 naming the field at fault (`["body", "stage"]`), shaped like a request-validation
    error: the detail reads `body.stage: <msg>`."""
    return Unprocessable(f"{'.'.join(str(p) for p in loc)}: {msg}", errors=[{"loc": loc, "msg": msg, "type": kind}])


class ServiceUnavailable(ProblemError):
    status, title, slug = 503, "Service unavailable", "unavailable"


class MergedAway(ProblemError):
    """A read of a customer that was merged into another: 308 to the same path on the survivor
    (`Location`, query kept), with `merged_into` in the body. Clients that follow redirects get
    the survivor, which holds the duplicate's data; others read `merged_into`. Both services
    answer a merged duplicate this way (document it with `MERGED_AWAY_RESPONSE`)."""

    status, title, slug = 308, "Merged into another customer", "merged"

    def __init__(self, customer_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        super().__init__(f"customer {customer_id} was merged into {survivor_id}", merged_into=str(survivor_id))
        self.customer_id = customer_id
        self.survivor_id = survivor_id

    def headers_for(self, request: Request) -> dict[str, str]:
        location = request.url.path.replace(str(self.customer_id), str(self.survivor_id), 1)
        if request.url.query:
            location += "?" + request.url.query
        return {"Location": location}


_EXAMPLE_SURVIVOR = "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10"


class MergedAwayProblem(BaseModel):
    """Answer to a GET of a customer that was merged into another one."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": PROBLEM_TYPE_BASE + MergedAway.slug,
                    "title": MergedAway.title,
                    "status": MergedAway.status,
                    "detail": f"customer 5a1f0c2e-7b3d-4c8e-9f1a-2b3c4d5e6f70 was merged into {_EXAMPLE_SURVIVOR}",
                    "merged_into": _EXAMPLE_SURVIVOR,
                }
            ]
        }
    )

    type: str
    title: str
    status: int
    detail: str
    merged_into: uuid.UUID


# OpenAPI `responses=` entry of a route that answers a merged duplicate with MergedAway.
MERGED_AWAY_RESPONSE: dict[int | str, dict[str, Any]] = {
    308: {
        "model": MergedAwayProblem,
        "description": "The customer was merged into another: `Location` (the same path on the survivor) and "
        "`merged_into` name the survivor.",
        "content": {PROBLEM_MEDIA_TYPE: {}},
    }
}


def problem_response(
    status: int,
    title: str,
    *,
    slug: str,
    detail: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONBytesResponse:
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return JSONBytesResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _clean_errors(raw: list[Any]) -> list[dict[str, Any]]:
    errors = []
    for err in raw:
        errors.append(
            {
                "loc": [str(p) if not isinstance(p, int) else p for p in err.get("loc", ())],
                "msg": err.get("msg", ""),
                "type": err.get("type", ""),
            }
        )
    return errors


def document_problems_as_problem_json(app: FastAPI) -> None:
    """Problem answers documented under the media type they are sent with. A `responses=` entry
    with a `model` puts the model's schema under the route's own media type (application/json,
    or text/csv on an export) and leaves the `application/problem+json` entry it names empty;
    once FastAPI has built the document, the schema moves to problem+json and the other entry
    goes. FastAPI's own 422 (`HTTPValidationError` as application/json) is never sent: the
    kit answers invalid input with a problem, so it is documented as one, and left out where no
    input can be invalid (only plain text path parameters, no body)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            _move_problem_schemas(document)
            _document_validation_answers(document)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


_FASTAPI_422 = "#/components/schemas/HTTPValidationError"
_DESCRIPTIVE = frozenset({"type", "title", "description", "examples", "example"})


def _document_validation_answers(document: dict[str, Any]) -> None:
    schemas = document.get("components", {}).get("schemas", {})
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            answers = operation.get("responses", {})
            default = answers.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if default.get("$ref") != _FASTAPI_422:
                continue
            if _takes_no_invalid_input(operation):
                del answers["422"]
            else:
                if "Problem" not in schemas:  # no route documents a problem yet
                    generated = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
                    schemas.update(generated.pop("$defs", {}))
                    schemas["Problem"] = generated
                answers["422"] = {
                    "description": "Invalid input; `errors` lists each field problem.",
                    "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                }
    rest = str(document.get("paths", {}))
    if _FASTAPI_422 not in rest:
        schemas.pop("HTTPValidationError", None)
        if "#/components/schemas/ValidationError" not in rest + str(schemas):
            schemas.pop("ValidationError", None)


def _takes_no_invalid_input(operation: dict[str, Any]) -> bool:
    """No body, and only parameters any text satisfies."""
    if "requestBody" in operation:
        return False
    return all(
        p.get("schema", {}).get("type") == "string" and set(p.get("schema", {})) <= _DESCRIPTIVE
        for p in operation.get("parameters", [])
    )


def _move_problem_schemas(document: dict[str, Any]) -> None:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for answer in operation.get("responses", {}).values():
                content = answer.get("content") or {}
                if content.get(PROBLEM_MEDIA_TYPE) != {}:
                    continue
                # The model went under the route's media type (application/json, text/csv...).
                others = [media for media in content if media != PROBLEM_MEDIA_TYPE]
                if len(others) == 1:
                    content[PROBLEM_MEDIA_TYPE] = content.pop(others[0])


def install_problem_handlers(app: FastAPI) -> None:
    """Every error leaves as problem+json, including Starlette's 404/405 and crashes."""

    async def on_problem(request: Request, exc: Exception) -> JSONBytesResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(
            exc.status,
            exc.title,
            slug=exc.slug,
            detail=exc.detail,
            headers=exc.headers_for(request),
            instance=request.url.path,
            extra=exc.extra or None,
        )

    async def on_validation(request: Request, exc: Exception) -> JSONBytesResponse:
        assert isinstance(exc, RequestValidationError)
        errors = _clean_errors(list(exc.errors()))
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        return problem_response(
            422, "Invalid request", slug="validation", detail=detail, errors=errors, instance=request.url.path
        )

    async def on_http(request: Request, exc: Exception) -> JSONBytesResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400:  # FastAPI/Starlette could not parse the body at all
            return unreadable_body_problem(request, exc)
        titles = {404: "Not found", 405: "Method not allowed", 401: "Unauthorized", 403: "Forbidden"}
        headers = getattr(exc, "headers", None)
        if exc.status_code == 413:  # the body cap (cxkit.http.body_limit), as PayloadTooLarge renders
            title, slug = PayloadTooLarge.title, PayloadTooLarge.slug
        else:
            title, slug = titles.get(exc.status_code, "HTTP error"), str(exc.status_code)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request) or (headers or {}).get("Allow", "")}
        return problem_response(
            exc.status_code,
            title,
            slug=slug,
            detail=str(exc.detail) if exc.detail else None,
            headers=headers,
            instance=request.url.path,
        )

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    for error in DATABASE_ERRORS:
        app.add_exception_handler(error, on_database_error)
    app.add_exception_handler(Exception, on_crash)


def allowed_methods(request: Request) -> str:
    """The `Allow` of a 405: every method some route of this path takes (RFC 9110 15.5.6).
    Starlette names only the methods of the first route whose path matched, and FastAPI makes
    one route per operation, so `GET` and `POST /v1/campaigns` are two routes. Walks the routes
    as FastAPI's OpenAPI generation does (included routers expanded); runs only on a 405. A path
    of `only_these_methods` answers its own list (its refusing route's methods, and the id
    template's beside it, all fail there).

    HEAD is served wherever GET is (cxkit.http.app), and is not named, as the OpenAPI document
    names none: `Allow` lists the documented methods."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        if route.methods and route.matches(request.scope)[0] is not Match.NONE:
            own: str | None = getattr(route.endpoint, _ALLOW_ATTRIBUTE, None)
            if own is not None:
                return own
            methods |= route.methods
    return ", ".join(sorted(methods))


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
_ALLOW_ATTRIBUTE = "cx_allow"  # on the endpoint of an only_these_methods route: its path's `Allow`


def only_these_methods(router: APIRouter, path: str, methods: tuple[str, ...] = ("GET", "HEAD")) -> None:
    """A literal path (`/customers/export`) beside an id template of the same depth
    (`/customers/{customer_id}`) is matched by the id's routes too: a PATCH of it would be taken
    for a PATCH of a customer whose id is "export" (422), and a 405 would name the id's methods.
    Registered before the id's routes, this answers every other method on the literal path with
    405 and an `Allow` naming only its own (a method no route names at all gets the same
    `Allow`, see allowed_methods). HEAD reaches the path's GET as a GET (cxkit.http.app)."""
    allow = ", ".join(m for m in methods if m != "HEAD")

    async def method_not_allowed(request: Request) -> JSONBytesResponse:
        return problem_response(405, "Method not allowed", slug="405", headers={"Allow": allow}, instance=request.url.path)

    setattr(method_not_allowed, _ALLOW_ATTRIBUTE, allow)
    others = [m for m in _METHODS if m not in methods]
    router.add_api_route(path, method_not_allowed, methods=others, include_in_schema=False)


def unreadable_body_problem(request: Request, exc: StarletteHTTPException) -> JSONBytesResponse:
    """A body that cannot be parsed at all (JSON that is not UTF-8, a broken multipart body) is
    invalid input like any other: 422 problem+json with the body as the field at fault, as a
    malformed JSON text already is (FastAPI's `json_invalid`), instead of Starlette's bare 400."""
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        msg, kind = "the body is not valid UTF-8", "body_encoding"
    else:
        msg, kind = str(exc.detail) if exc.detail else "the body could not be parsed", "body_invalid"
    errors = [{"loc": ["body"], "msg": msg, "type": kind}]
    return problem_response(
        422, "Invalid request", slug="validation", detail=f"body: {msg}", errors=errors, instance=request.url.path
    )


async def on_crash(request: Request, exc: Exception) -> JSONBytesResponse:
    log.exception("unhandled error", exc_info=exc, extra={"method": request.method, "path": redact_path(request.scope["path"])})
    return problem_response(
        500, "Internal error", slug="internal", detail="An unexpected error occurred.", instance=request.url.path
    )


async def on_database_error(request: Request, exc: Exception) -> JSONBytesResponse:
    """503 with Retry-After while PostgreSQL is away, or when it refused the request's
    transaction for now (a deadlock's victim, a serialization failure, a full lock table: nothing
    was kept, so the same request may be sent again), and one log line (no traceback) per failed
    request; any other error of these types is a 500, as on_crash renders it."""
    if is_database_unavailable(exc):
        message, slug, retry_after = "database unavailable", "database-unavailable", DATABASE_RETRY_AFTER_S
        detail = "The database cannot be reached right now; retry shortly."
    elif is_database_busy(exc):
        message, slug, retry_after = "database busy", "database-busy", DATABASE_BUSY_RETRY_AFTER_S
        detail = "The database could not finish this request now (nothing was changed); retry shortly."
    else:
        return await on_crash(request, exc)
    cause = database_error_cause(exc)
    log.warning(
        message,
        extra={
            "method": request.method,
            "path": redact_path(request.scope["path"]),
            "error": f"{type(cause).__name__}: {cause}"[:300],
        },
    )
    return problem_response(
        503, "Service unavailable", slug=slug, detail=detail, headers={"Retry-After": str(retry_after)}, instance=request.url.path
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the problem+json answers of a route. Every
    such route reads the database, so 503 is documented for each; a route that takes an API key
    (401 listed) is rate limited, so 429 comes with it."""
    statuses = tuple(dict.fromkeys((*statuses, *((429,) if 401 in statuses else ()), 503)))
    descriptions = {
        401: "No or unknown API key.",
        403: "The key lacks the scope this operation needs.",
        404: "No such resource.",
        409: "Conflicts with existing data.",
        412: "`If-Match` does not match the current version.",
        413: "Body too large.",
        415: "Unsupported content type.",
        422: "Invalid input; `errors` lists each field problem.",
        428: "`If-Match` required.",
        429: "Too many requests for this key (or failed authentications from this address); see `Retry-After`.",
        503: "The database is unreachable, or refused this request's transaction for now (a deadlock, a full lock "
        "table: nothing was changed); see `Retry-After`.",
    }
    return {
        s: {"model": Problem, "description": descriptions.get(s, "Error."), "content": {PROBLEM_MEDIA_TYPE: {}}} for s in statuses
    }
