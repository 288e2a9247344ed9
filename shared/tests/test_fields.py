"""The field vocabulary both services take input with (cxkit.fields, cxkit.http.params): real
pydantic validation and the JSON Schema each piece writes into the OpenAPI document."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any, ClassVar

import httpx
import pytest
from fastapi import FastAPI, Query
from pydantic import BaseModel, Field, StringConstraints, TypeAdapter, ValidationError

from cxkit.fields import (
    NO_NUL,
    NOT_BLANK_NO_NUL,
    SURROGATE_REFUSED,
    InputModel,
    NoNul,
    PatchModel,
    QueryText,
    Text,
    Timestamp,
    has_nul,
    nul_at,
)
from cxkit.http.app import install_platform
from cxkit.http.etag import check_if_match
from cxkit.http.params import IfMatch, id_path
from cxkit.http.problems import field_problem, install_problem_handlers
from cxkit.http.responses import JSONBytesResponse

EXAMPLE_ID = "0b6f3c8e-2f7e-4a53-9d1b-2f5c9a3e7d10"


class Note(InputModel):
    text: str
    tags: list[str] = []
    extra: dict[str, Any] = {}


class Ticket(InputModel):
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), NoNul]
    code: str = Field("a", pattern=r"^[a-z]+$")
    kind: Annotated[str, Field(json_schema_extra={"enum": ["bug", "idea"]})] = "bug"
    notes: list[Note] = []


class TicketUpdate(PatchModel):
    title: str | None = None
    owner: str | None = None

    not_null: ClassVar[tuple[str, ...]] = ("title",)


def _errors(model: type[BaseModel], data: Any) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in info.value.errors()]


NUL_ERROR = {"msg": "Value error, must not contain NUL characters", "type": "value_error"}


def test_nul_at_names_the_string_holding_the_nul_and_the_dict_whose_key_holds_one() -> None:
    assert nul_at("a\x00b") == [] and nul_at("ab") is None
    assert nul_at({"a": ["x", {"b": "y\x00"}]}) == ["a", 1, "b"]
    assert nul_at({"a": {"k\x00": 1}}) == ["a"]
    assert nul_at([1, 2.5, None, True, {"n": 3}]) is None
    # Any depth: the walk used to stop at 20 levels, and a NUL below reached PostgreSQL (a 500).
    deep: Any = "\x00"
    for _ in range(5000):
        deep = [deep]
    assert nul_at(deep) == [0] * 5000 and has_nul(deep)
    assert nul_at({"a": "ok", "b": [{"c": "x"}, {"d": "\x00"}], "e": "\x00"}) == ["b", 1, "d"]  # the first, in order
    assert nul_at({"a": {"b": ["\x00"]}, "k\x00": 1}) == ["a", "b", 0]  # a value before a key
    assert nul_at({"a": {"k\x00": 1, "b": "\x00"}}) == ["a"]  # a key before a value
    assert has_nul({"a": ["\x00"]}) and not has_nul({"a": ["b"]}) and not has_nul(7)


def test_input_model_refuses_nul_anywhere_and_names_where() -> None:
    assert _errors(Ticket, {"title": "a\x00"}) == [{"loc": ["title"], **NUL_ERROR}]
    nested = {"title": "t", "notes": [{"text": "ok"}, {"text": "ok", "extra": {"deep": [1, "x\x00"]}}]}
    assert _errors(Ticket, nested) == [{"loc": ["notes", 1, "extra", "deep", 1], **NUL_ERROR}]
    assert _errors(Ticket, {"title": "t", "notes": [{"text": "ok", "tags": ["a", "\x00"]}]}) == [
        {"loc": ["notes", 0, "tags", 1], **NUL_ERROR}
    ]
    assert _errors(Note, {"text": "ok", "extra": {"key\x00": 1}}) == [{"loc": ["extra"], **NUL_ERROR}]
    assert Ticket.model_validate({"title": " t ", "notes": [{"text": "é ✓", "extra": {"n": None}}]}).title == "t"


def test_input_model_refuses_unknown_fields() -> None:
    (error,) = _errors(Note, {"text": "ok", "id": str(uuid.uuid4())})
    assert error["loc"] == ["id"] and error["type"] == "extra_forbidden"


def test_input_model_schema_puts_the_nul_pattern_on_free_text_only() -> None:
    schema = Ticket.model_json_schema()
    props = schema["properties"]
    assert props["title"]["pattern"] == NOT_BLANK_NO_NUL  # stripped and not empty: a kept character too
    assert props["code"]["pattern"] == "^[a-z]+$"  # its own pattern already leaves NUL out
    assert "pattern" not in props["kind"]  # fixed values
    note = schema["$defs"]["Note"]["properties"]
    assert note["text"]["pattern"] == NO_NUL
    assert note["tags"]["items"]["pattern"] == NO_NUL
    assert schema["additionalProperties"] is False


def test_no_nul_text_refuses_nul_outside_a_model_too() -> None:
    text = TypeAdapter(Text)
    assert text.validate_python("plain") == "plain"
    with pytest.raises(ValidationError, match="must not contain NUL characters"):
        text.validate_python("a\x00b")
    assert text.json_schema() == {"type": "string", "pattern": NO_NUL}
    assert TypeAdapter(QueryText).json_schema() == {"type": "string", "pattern": NO_NUL}


SURROGATE_ERROR = {"msg": f"Value error, {SURROGATE_REFUSED}", "type": "value_error"}


def test_text_refuses_unpaired_surrogates_as_it_refuses_nul() -> None:
    """A lone UTF-16 surrogate (JSON `"\\udc00"`, which json.loads takes) is no Unicode text:
    orjson refuses to write it, so it reached the JSONB column as a 500."""
    for alias in (Text, QueryText, Annotated[Text | None, Field(max_length=2000)]):
        text = TypeAdapter(alias)
        for bad in ("a\udc00", "\ud800", "\ud83d x", "ok \udfff"):
            with pytest.raises(ValidationError, match=re.escape(SURROGATE_REFUSED)):
                text.validate_python(bad)
        for good in ("plain", "é ✓", "\U0001f600 paired", "\ue000 private use", ""):
            assert text.validate_python(good) == good
    with pytest.raises(ValidationError, match="must not contain NUL characters"):  # NUL still says NUL
        TypeAdapter(Text).validate_python("a\x00\udc00")


def test_input_model_refuses_unpaired_surrogates_anywhere_and_names_where() -> None:
    assert _errors(Note, {"text": "a\udc00"}) == [{"loc": ["text"], **SURROGATE_ERROR}]
    assert _errors(Note, {"text": "ok", "tags": ["é", "\ud800"]}) == [{"loc": ["tags", 1], **SURROGATE_ERROR}]
    assert _errors(Note, {"text": "ok", "extra": {"deep": [{"k": "x\udfff"}]}}) == [
        {"loc": ["extra", "deep", 0, "k"], **SURROGATE_ERROR}
    ]
    assert _errors(Note, {"text": "ok", "extra": {"key\udc00": 1}}) == [{"loc": ["extra"], **SURROGATE_ERROR}]
    assert _errors(Ticket, {"title": "t\udc00"}) == [{"loc": ["title"], **SURROGATE_ERROR}]  # not pydantic's string_unicode
    assert _errors(TicketUpdate, {"owner": "\ud800"}) == [{"loc": ["owner"], **SURROGATE_ERROR}]
    assert _errors(Note, {"text": "\udc00", "tags": ["\x00"]}) == [{"loc": ["text"], **SURROGATE_ERROR}]  # the first, in order
    assert _errors(Note, {"text": "\udc00\x00"}) == [{"loc": ["text"], **NUL_ERROR}]
    kept = Note.model_validate({"text": "\U0001f600 é", "tags": ["✓"], "extra": {"ü": ["\U0001f600"]}})
    assert kept.text == "\U0001f600 é" and kept.extra == {"ü": ["\U0001f600"]}


class Survey(InputModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul]
    intro: Text | None = Field(None, max_length=2000)


async def test_an_unpaired_surrogate_in_a_body_is_a_422_naming_the_field_not_a_500() -> None:
    app = FastAPI(docs_url=None, redoc_url=None)
    install_platform(app, "kit-test")

    @app.post("/v1/surveys")
    async def create(body: Survey) -> JSONBytesResponse:
        return JSONBytesResponse(body.model_dump())  # orjson, as the JSONB column writes it

    @app.get("/v1/surveys")
    async def search(q: Annotated[QueryText | None, Query(max_length=200)] = None) -> dict[str, Any]:
        return {"q": q}

    sent = b'{"name": "x", "intro": "a\\udc00"}'  # JSON's escape of a lone surrogate
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t"
    ) as client:
        refused = await client.post("/v1/surveys", content=sent, headers={"Content-Type": "application/json"})
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"] == [{"loc": ["body", "intro"], **SURROGATE_ERROR}]
        taken = await client.post("/v1/surveys", json={"name": "x", "intro": "a \U0001f600"})
        assert taken.status_code == 200 and taken.json()["intro"] == "a \U0001f600"
        assert (await client.get("/v1/surveys", params={"q": "a\U0001f600"})).json() == {"q": "a\U0001f600"}


def test_patch_model_refuses_null_for_not_null_fields_and_documents_them_without_null() -> None:
    assert TicketUpdate.model_validate({}).model_fields_set == set()
    assert TicketUpdate.model_validate({"owner": None}).model_fields_set == {"owner"}
    (error,) = _errors(TicketUpdate, {"title": None, "owner": "x"})
    assert error["loc"] == [] and error["msg"] == "Value error, title cannot be null"
    assert _errors(TicketUpdate, {"owner": "\x00"}) == [{"loc": ["owner"], **NUL_ERROR}]
    props = TicketUpdate.model_json_schema()["properties"]
    assert props["title"] == {"type": "string", "pattern": NO_NUL, "title": "Title"}
    assert props["owner"]["default"] is None and {"type": "null"} in props["owner"]["anyOf"]


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2026-11-23T10:00:00Z", dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)),
        ("2026-11-23t10:00:00z", dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)),
        ("2026-11-23T12:00:00.250+02:00", dt.datetime(2026, 11, 23, 10, 0, 0, 250_000, tzinfo=dt.UTC)),
        ("2026-11-23T05:30:00-04:30", dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)),
    ],
)
def test_timestamp_takes_rfc3339_text_and_keeps_it_in_utc(sent: str, stored: dt.datetime) -> None:
    value = TypeAdapter(Timestamp).validate_python(sent)
    assert value == stored and value.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    "sent",
    [
        "2026-11-23T10:00:00",  # no offset
        "2026-11-23 10:00:00Z",  # a space is not RFC 3339's separator here
        "2026-11-23",
        "20260101",
        0.5,
        1_700_000_000,
        "0001-01-01T00:00:00+14:00",  # leaves the calendar once in UTC
        "2026-13-45T10:00:00Z",
    ],
)
def test_timestamp_refuses_what_is_not_an_rfc3339_time(sent: Any) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Timestamp).validate_python(sent)


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.patch("/things/{thing_id}")
    async def patch_thing(
        thing_id: Annotated[uuid.UUID, id_path("thing", EXAMPLE_ID)],
        body: TicketUpdate,
        if_match: IfMatch = None,
        q: Annotated[QueryText | None, Query(max_length=20)] = None,
    ) -> dict[str, Any]:
        check_if_match(if_match, 3)
        if body.owner == "nobody":
            raise field_problem(["body", "owner"], "no such owner")
        return {"id": str(thing_id), "if_match": if_match, "q": q}

    return app


async def _patch(path: str, body: Any, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as client:
        return await client.patch(path, json=body, headers=headers)


@pytest.mark.parametrize("sent", ['"3"', 'W/"3"', '"1", "3"', "*", 'W/"2" ,  "3"'])
async def test_if_match_forms_that_name_the_current_version_pass(sent: str) -> None:
    r = await _patch(f"/things/{EXAMPLE_ID}", {}, **{"If-Match": sent})
    assert r.status_code == 200 and r.json()["if_match"] == sent


async def test_if_match_absent_passes_stale_is_412_and_overlong_is_422() -> None:
    assert (await _patch(f"/things/{EXAMPLE_ID}", {})).json()["if_match"] is None
    stale = await _patch(f"/things/{EXAMPLE_ID}", {}, **{"If-Match": '"2"'})
    assert stale.status_code == 412 and stale.headers["etag"] == '"3"'
    overlong = await _patch(f"/things/{EXAMPLE_ID}", {}, **{"If-Match": '"' + "9" * 200 + '"'})
    assert overlong.status_code == 422 and overlong.json()["errors"][0]["loc"] == ["header", "If-Match"]


async def test_nul_is_422_in_body_and_query_naming_the_field() -> None:
    r = await _patch(f"/things/{EXAMPLE_ID}", {"owner": "a\x00"})
    assert r.status_code == 422 and r.json()["errors"] == [{"loc": ["body", "owner"], **NUL_ERROR}]
    r = await _patch(f"/things/{EXAMPLE_ID}?q=a%00b", {})
    assert r.status_code == 422 and r.json()["errors"] == [{"loc": ["query", "q"], **NUL_ERROR}]
    r = await _patch("/things/not-a-uuid", {})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["path", "thing_id"]


async def test_field_problem_reads_like_a_validation_error() -> None:
    r = await _patch(f"/things/{EXAMPLE_ID}", {"owner": "nobody"})
    assert r.status_code == 422
    assert r.json()["detail"] == "body.owner: no such owner"
    assert r.json()["errors"] == [{"loc": ["body", "owner"], "msg": "no such owner", "type": "value_error"}]


def test_parameters_are_documented_with_description_and_example() -> None:
    (operation,) = _app().openapi()["paths"]["/things/{thing_id}"].values()
    params = {p["name"]: p for p in operation["parameters"]}
    assert params["thing_id"]["description"] == "The thing's id." and params["thing_id"]["schema"]["examples"] == [EXAMPLE_ID]
    assert params["If-Match"]["in"] == "header" and "412" in params["If-Match"]["description"]
    assert params["If-Match"]["schema"]["examples"] == ['"1"']
    assert params["If-Match"]["schema"]["anyOf"][0] == {"type": "string", "maxLength": 200}
    assert params["q"]["schema"]["anyOf"][0] == {"type": "string", "maxLength": 20, "pattern": NO_NUL}
