"""Touchpoints over HTTP against real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cem.surveys.schemas import SurveyCreate, SurveyUpdate
from cem.surveys.service import create_survey, update_survey
from cem.touchpoints.service import delete_touchpoint
from cxkit.http.problems import ProblemError
from cxkit.testing import bearer, wait_for


async def test_create_and_list_touchpoints_in_key_order_with_pagination(client: httpx.AsyncClient) -> None:
    for key in ["support-call", "checkout", "delivery"]:
        r = await client.post("/v1/touchpoints", json={"key": key, "name": key.title(), "channel": "web"})
        assert r.status_code == 201, r.text
        assert r.headers["etag"] == '"1"'
    first = (await client.get("/v1/touchpoints", params={"limit": 2})).json()
    assert [t["key"] for t in first["items"]] == ["checkout", "delivery"]
    second = (await client.get("/v1/touchpoints", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [t["key"] for t in second["items"]] == ["support-call"] and second["next_cursor"] is None


async def test_touchpoint_key_is_unique(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/touchpoints", json={"key": "checkout", "name": "A"})).status_code == 201
    dup = await client.post("/v1/touchpoints", json={"key": "checkout", "name": "B"})
    assert dup.status_code == 409 and dup.headers["content-type"] == "application/problem+json"


async def test_touchpoint_validation(client: httpx.AsyncClient) -> None:
    bad = [
        {"key": "Has Spaces", "name": "x"},
        {"key": "ok", "name": ""},
        {"key": "ok", "name": "x", "target_metric": "nps", "target_score": 150},
        {"key": "ok", "name": "x", "target_score": 40},
        {"key": "ok", "name": "x", "id": "1"},
    ]
    for body in bad:
        r = await client.post("/v1/touchpoints", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["errors"]
    ok = await client.post("/v1/touchpoints", json={"key": "ok", "name": "x", "target_metric": "nps", "target_score": 40})
    assert ok.status_code == 201 and ok.json()["target_score"] == 40


async def test_touchpoints_need_keys_and_scopes(client: httpx.AsyncClient, keys: dict[str, str]) -> None:
    assert (await client.get("/v1/touchpoints", headers={"Authorization": ""})).status_code == 401
    r = await client.post("/v1/touchpoints", json={"key": "a", "name": "A"}, headers=bearer(keys["read"]))
    assert r.status_code == 403


async def test_get_patch_with_if_match_and_version_bump(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/touchpoints", json={"key": "checkout", "name": "Checkout"})).json()
    url = f"/v1/touchpoints/{created['id']}"
    got = await client.get(url)
    assert got.status_code == 200 and got.headers["etag"] == '"1"'
    r = await client.patch(
        url, json={"name": "Web checkout", "target_metric": "nps", "target_score": 45}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 200 and r.json()["version"] == 2 and r.headers["etag"] == '"2"'
    stale = await client.patch(url, json={"name": "Other"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.headers["etag"] == '"2"'
    same = await client.patch(url, json={"name": "Web checkout"})
    assert same.json()["version"] == 2, "a PATCH that changes nothing keeps the version"
    cleared = await client.patch(url, json={"target_metric": None, "target_score": None, "channel": None})
    assert cleared.json()["target_score"] is None and cleared.json()["version"] == 3


async def test_patch_validates_against_the_stored_values(client: httpx.AsyncClient) -> None:
    tid = (await client.post("/v1/touchpoints", json={"key": "checkout", "name": "Checkout"})).json()["id"]
    url = f"/v1/touchpoints/{tid}"
    for body in [
        {"target_score": 40},  # no metric stored or sent
        {"target_metric": "ces", "target_score": 9},
        {"key": "renamed"},
        {"name": None},
        {"name": ""},
        {"name": "a\u0000b"},
        {"target_score": "high"},
    ]:
        r = await client.patch(url, json=body)
        assert r.status_code == 422, (body, r.text)
    assert (await client.get("/v1/touchpoints/not-a-uuid")).status_code == 422
    assert (await client.get("/v1/touchpoints/5d2b6a0e-8c1f-4a57-b1d2-0c9e8f7a6b5c")).status_code == 404


async def test_delete_refuses_a_touchpoint_in_use_and_deletes_a_free_one(client: httpx.AsyncClient) -> None:
    used = (await client.post("/v1/touchpoints", json={"key": "checkout", "name": "Checkout"})).json()
    free = (await client.post("/v1/touchpoints", json={"key": "kiosk", "name": "Kiosk"})).json()
    await client.post("/v1/surveys", json={"name": "Checkout NPS", "kind": "nps", "touchpoint": "checkout"})
    r = await client.delete(f"/v1/touchpoints/{used['id']}")
    assert r.status_code == 409 and "Checkout NPS" in r.json()["detail"]
    assert (await client.delete(f"/v1/touchpoints/{free['id']}", headers={"If-Match": '"7"'})).status_code == 412
    assert (await client.delete(f"/v1/touchpoints/{free['id']}", headers={"If-Match": '"1"'})).status_code == 204
    assert (await client.get(f"/v1/touchpoints/{free['id']}")).status_code == 404


async def test_a_touchpoint_or_survey_read_naming_its_current_etag_is_304_and_a_change_makes_it_200(
    client: httpx.AsyncClient, make: Any
) -> None:
    rows = {
        "touchpoints": (await make.touchpoint("etag-desk"), {"name": "Front desk"}),
        "surveys": (await make.survey("csat", status="draft"), {"name": "Desk CSAT"}),
    }
    for kind, (row, change) in rows.items():
        url = f"/v1/{kind}/{row['id']}"
        current = (await client.get(url)).headers["etag"]
        for held in (current, f"W/{current}", f'"0", {current}', "*"):
            r = await client.get(url, headers={"If-None-Match": held})
            assert (r.status_code, r.content, r.headers["etag"]) == (304, b"", current), (kind, held)
        assert (await client.patch(url, json=change)).status_code == 200
        fresh = await client.get(url, headers={"If-None-Match": current})
        assert fresh.status_code == 200 and fresh.headers["etag"] != current, kind
        assert fresh.json()["name"] == change["name"]


# --- a survey written while its touchpoint is deleted ------------------------------------------
# The delete locks the touchpoint, then looks for surveys naming it; a survey write that named it
# must make the delete wait for its commit (then see the survey), or wait for the delete's own
# commit (then find no touchpoint). Never a survey naming a touchpoint that is gone.


async def _waiting_on_locks(session_factory: Any) -> int:
    """How many sessions of this database wait on a lock."""
    async with session_factory() as session:
        waiting: int = await session.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
        )
    return waiting


async def _committed(session: AsyncSession, write: Callable[[AsyncSession], Awaitable[object]]) -> ProblemError | None:
    """`write` in `session`, committed; the problem it raised instead (rolled back), if any."""
    try:
        await write(session)
    except ProblemError as problem:
        await session.rollback()
        return problem
    await session.commit()
    return None


async def _surveys_naming_missing_touchpoints(session_factory: Any) -> list[tuple[str, str | None, str | None]]:
    async with session_factory() as session:
        rows = await session.execute(
            text(
                "SELECT name, touchpoint, trigger_touchpoint FROM surveys s WHERE EXISTS ("
                " SELECT 1 FROM unnest(ARRAY[s.touchpoint, s.trigger_touchpoint]) AS k(key)"
                " WHERE k.key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM touchpoints t WHERE t.key = k.key))"
            )
        )
        return [tuple(r) for r in rows.all()]


async def _survey_write(make: Any, how: str) -> Callable[[AsyncSession], Awaitable[object]]:
    """A survey write naming the touchpoint `kiosk`: a new survey measuring it or triggered at it,
    or a draft changed to measure it."""
    if how == "create":
        return lambda s: create_survey(s, SurveyCreate(name="Kiosk NPS", kind="nps", touchpoint="kiosk"))
    if how == "create with a trigger":
        trigger = {"interaction_type": "visit", "touchpoint": "kiosk"}
        return lambda s: create_survey(s, SurveyCreate.model_validate({"name": "Kiosk NPS", "kind": "nps", "trigger": trigger}))
    draft = await make.survey("nps", status="draft", name="Kiosk NPS")
    return lambda s: update_survey(s, uuid.UUID(draft["id"]), SurveyUpdate(touchpoint="kiosk"), None)


@pytest.mark.parametrize("how", ["create", "create with a trigger", "update"])
async def test_a_touchpoint_deleted_while_a_survey_names_it_waits_for_the_survey_and_is_refused(
    make: Any, session_factory: Any, how: str
) -> None:
    kiosk = await make.touchpoint("kiosk")
    write = await _survey_write(make, how)
    async with session_factory() as surveying, session_factory() as deleting:
        await write(surveying)  # not committed yet
        delete = asyncio.create_task(_committed(deleting, lambda s: delete_touchpoint(s, uuid.UUID(kiosk["id"]), None)))
        await wait_for(lambda: _done_or_waiting(delete, session_factory))
        await surveying.commit()
        refused = await delete
    assert refused is not None and refused.status == 409 and "Kiosk NPS" in str(refused.detail), refused
    assert await _surveys_naming_missing_touchpoints(session_factory) == []


@pytest.mark.parametrize("how", ["create", "create with a trigger", "update"])
async def test_a_survey_naming_a_touchpoint_being_deleted_waits_for_the_delete_and_is_422(
    make: Any, session_factory: Any, how: str
) -> None:
    kiosk = await make.touchpoint("kiosk")
    write = await _survey_write(make, how)
    async with session_factory() as surveying, session_factory() as deleting:
        await delete_touchpoint(deleting, uuid.UUID(kiosk["id"]), None)  # not committed yet
        survey = asyncio.create_task(_committed(surveying, write))
        await wait_for(lambda: _done_or_waiting(survey, session_factory))
        await deleting.commit()
        refused = await survey
    assert refused is not None and refused.status == 422 and "no touchpoint with key 'kiosk'" in str(refused.detail), refused
    assert await _surveys_naming_missing_touchpoints(session_factory) == []


async def _done_or_waiting(task: asyncio.Task[Any], session_factory: Any) -> bool:
    return task.done() or await _waiting_on_locks(session_factory) > 0
