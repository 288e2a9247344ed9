"""Pipelines under concurrent writes: names unique whatever their case (as PostgreSQL lowers
them), one default pipeline, and stage edits serialized with the deal writes that move deals
into those stages. Interleavings are forced with a second connection holding row locks."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select

from crm.cli import ALEMBIC_INI
from crm.pipelines.models import Pipeline
from cxkit import testing
from cxkit.pg_pool import asyncpg_dsn

STAGES = [
    {"name": "Lead in", "probability": "0.2"},
    {"name": "Demo", "probability": "0.6"},
    {"name": "Won", "probability": "1", "is_won": True},
    {"name": "Lost", "probability": "0", "is_lost": True},
]


@pytest.fixture
async def other(crm_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own, as another writer's would be."""
    conn = await asyncpg.connect(asyncpg_dsn(crm_database_url))
    yield conn
    await conn.close()


async def waiting_on_locks(conn: asyncpg.Connection) -> int:
    """How many sessions of this database wait on a lock."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return count


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)


async def assert_deals_match_their_stages(conn: asyncpg.Connection) -> None:
    """Every deal's status is its stage's (won, lost or open), and its stage is of its pipeline."""
    wrong = await conn.fetch(
        "SELECT d.id, d.status, s.name, s.is_won, s.is_lost FROM deals d JOIN pipeline_stages s ON s.id = d.stage_id "
        "WHERE d.pipeline_id <> s.pipeline_id "
        "OR d.status <> CASE WHEN s.is_won THEN 'won' WHEN s.is_lost THEN 'lost' ELSE 'open' END"
    )
    assert [dict(r) for r in wrong] == []


# --- names ------------------------------------------------------------------------------------


async def test_a_name_lowered_differently_by_python_and_postgresql_is_409_the_second_time(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    # Python lowers a capital sigma ending a word to the final sigma; PostgreSQL to U+03C3.
    for name in ("ΟΔΟΣ", "İSTANBUL"):
        await make.pipeline(name=name)
        again = await client.post("/v1/pipelines", json={"name": name, "stages": STAGES})
        assert again.status_code == 409, again.text
        assert "already exists" in again.json()["detail"]
    renamed = await make.pipeline()
    taken = await client.patch(f"/v1/pipelines/{renamed['id']}", json={"name": "ΟΔΟΣ"})
    assert taken.status_code == 409, taken.text
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Pipeline)) == 4  # with the built-in default


@pytest.mark.parametrize(
    "names",
    [["Enterprise"] * 6, ["Enterprise", "ENTERPRISE", "enterprise", "eNTERPRISE", "EnTeRpRiSe", "enTERPRISE"]],
    ids=["same", "by-case"],
)
async def test_concurrent_creates_of_one_name_make_one_pipeline_and_409s_whatever_the_case(
    client: httpx.AsyncClient, session_factory: Any, names: list[str]
) -> None:
    await client.get("/v1/pipelines")  # the built-in default, made before the race
    answers = await asyncio.gather(*[client.post("/v1/pipelines", json={"name": n, "stages": STAGES}) for n in names])
    assert {a.status_code for a in answers} == {201, 409}, [a.text for a in answers]
    for refused in (a for a in answers if a.status_code == 409):
        assert refused.headers["content-type"] == "application/problem+json"
        assert "already exists" in refused.json()["detail"]
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).where(func.lower(Pipeline.name) == "enterprise")) == 1


async def test_concurrent_renames_to_one_name_keep_names_unique_whatever_the_case(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    pipelines = [await make.pipeline() for _ in range(6)]
    names = ["Partners", "PARTNERS", "partners"] * 2
    answers = await asyncio.gather(
        *[client.patch(f"/v1/pipelines/{p['id']}", json={"name": n}) for p, n in zip(pipelines, names, strict=True)]
    )
    assert {a.status_code for a in answers} == {200, 409}, [a.text for a in answers]
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).where(func.lower(Pipeline.name) == "partners")) == 1


async def _alembic(database_url: str, *args: str) -> tuple[int, str]:
    """`alembic ARGS` (upgrade, downgrade) on the database, as its own process."""
    code = (
        "import sys; from alembic import command; from cxkit.migrations import alembic_config; from pathlib import Path; "
        "getattr(command, sys.argv[3])(alembic_config(Path(sys.argv[1]), sys.argv[2]), sys.argv[4])"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(ALEMBIC_INI), database_url, *args, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_the_migration_stops_on_names_differing_by_case_and_goes_back_and_forth() -> None:
    name = await testing.create_database("crm_migration")
    url = testing.asyncpg_url(testing.database_dsn(name))
    try:
        code, err = await _alembic(url, "upgrade", "crm0025")
        assert code == 0, err[-2000:]
        insert = (
            "INSERT INTO pipelines (id, name, is_default, version, created_at, updated_at) "
            "VALUES ($1, $2, false, 1, now(), now())"
        )
        for pipeline in ("Enterprise", "ENTERPRISE", "Retail"):
            await testing.db_rows(url, insert, uuid.uuid4(), pipeline)
        code, err = await _alembic(url, "upgrade", "crm0026")
        assert code != 0 and "pipeline names that differ only by case: " in err, err[-2000:]
        assert "'ENTERPRISE'" in err and "'Enterprise'" in err and "'Retail'" not in err
        await testing.db_rows(url, "UPDATE pipelines SET name = 'Enterprise (old)' WHERE name = 'ENTERPRISE'")
        assert (await _alembic(url, "upgrade", "crm0026"))[0] == 0
        with pytest.raises(asyncpg.UniqueViolationError, match="uq_pipelines_name_lower"):
            await testing.db_rows(url, insert, uuid.uuid4(), "RETAIL")
        code, err = await _alembic(url, "downgrade", "crm0025")
        assert code == 0, err[-2000:]
        await testing.db_rows(url, insert, uuid.uuid4(), "RETAIL")  # the rule as typed again
        with pytest.raises(asyncpg.UniqueViolationError, match="uq_pipelines_name"):
            await testing.db_rows(url, insert, uuid.uuid4(), "Retail")
    finally:
        await testing.drop_database(name)


# --- the default pipeline ---------------------------------------------------------------------


async def test_two_pipelines_made_default_at_once_leave_one_default(
    client: httpx.AsyncClient, make: Any, other: asyncpg.Connection
) -> None:
    builtin = (await client.get("/v1/pipelines")).json()["items"][0]
    first, second = await make.pipeline(), await make.pipeline()
    # Both PATCHes reach the moment they unset the current default while it is locked, and go on together.
    held = other.transaction()
    await held.start()
    await other.execute("SELECT 1 FROM pipelines WHERE id = $1 FOR UPDATE", uuid.UUID(builtin["id"]))
    patches = [asyncio.create_task(client.patch(f"/v1/pipelines/{p['id']}", json={"is_default": True})) for p in (first, second)]
    await until(lambda: _at_least(other, 2), "both PATCHes wait")
    await held.commit()
    answers = await asyncio.gather(*patches)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    defaults = [p["id"] for p in (await client.get("/v1/pipelines")).json()["items"] if p["is_default"]]
    assert len(defaults) == 1 and defaults[0] in (first["id"], second["id"])


async def _at_least(conn: asyncpg.Connection, waiting: int) -> bool:
    return await waiting_on_locks(conn) >= waiting


# --- stage edits and deal moves ---------------------------------------------------------------


async def _stage_edit_blocked_then_a_move(
    client: httpx.AsyncClient,
    other: asyncpg.Connection,
    pipeline: dict[str, Any],
    deal: dict[str, Any],
    stages: list[Any],
    held_stage: str,
    lock: str,
) -> tuple[httpx.Response, httpx.Response]:
    """The pipeline PATCH (`stages`) passes its checks, then waits on the row of the stage named
    `held_stage` (`lock` held by `other`); meanwhile the deal PATCH moves the deal into Demo.
    Then `other` lets go. Both answers, the pipeline PATCH's first."""
    stage = next(s for s in pipeline["stages"] if s["name"] == held_stage)
    held = other.transaction()
    await held.start()
    await other.execute(f"SELECT 1 FROM pipeline_stages WHERE id = $1 {lock}", uuid.UUID(stage["id"]))
    edit = asyncio.create_task(client.patch(f"/v1/pipelines/{pipeline['id']}", json={"stages": stages}))
    await until(lambda: _at_least(other, 1), "the pipeline PATCH waits")
    move = asyncio.create_task(client.patch(f"/v1/deals/{deal['id']}", json={"stage": "Demo"}))
    await until(lambda: _done_or_waiting(move, other), "the deal PATCH ends or waits")
    await held.commit()
    edited, moved = await asyncio.gather(edit, move)
    return edited, moved


async def _done_or_waiting(task: asyncio.Task[Any], conn: asyncpg.Connection) -> bool:
    """`task` ended, or a second session waits on a lock."""
    return task.done() or await _at_least(conn, 2)


async def test_a_stage_made_won_while_a_deal_moves_into_it_leaves_the_deal_won(
    client: httpx.AsyncClient, make: Any, other: asyncpg.Connection
) -> None:
    pipeline = await make.pipeline()
    lead_in, demo, won, lost = pipeline["stages"]
    deal = await make.deal(pipeline_id=pipeline["id"])
    swapped = [
        {"id": lead_in["id"], "name": "Lead in", "probability": "0.2"},
        {"id": demo["id"], "name": "Demo", "probability": "1", "is_won": True},
        {"id": won["id"], "name": "Won", "probability": "0.9"},
        {"id": lost["id"], "name": "Lost", "probability": "0", "is_lost": True},
    ]
    edited, moved = await _stage_edit_blocked_then_a_move(client, other, pipeline, deal, swapped, "Demo", "FOR NO KEY UPDATE")
    assert edited.status_code == 200, edited.text
    assert moved.status_code == 200, moved.text
    assert (moved.json()["stage"], moved.json()["status"]) == ("Demo", "won")
    await assert_deals_match_their_stages(other)


async def test_a_stage_removed_while_a_deal_moves_into_it_refuses_the_move_not_500(
    client: httpx.AsyncClient, make: Any, other: asyncpg.Connection
) -> None:
    pipeline = await make.pipeline()
    lead_in, _demo, won, lost = pipeline["stages"]
    deal = await make.deal(pipeline_id=pipeline["id"])
    without_demo = [
        {"id": lead_in["id"], "name": "Lead in", "probability": "0.2"},
        {"id": won["id"], "name": "Won", "probability": "1", "is_won": True},
        {"id": lost["id"], "name": "Lost", "probability": "0", "is_lost": True},
    ]
    edited, moved = await _stage_edit_blocked_then_a_move(client, other, pipeline, deal, without_demo, "Demo", "FOR KEY SHARE")
    assert edited.status_code == 200, edited.text
    assert moved.status_code == 422, moved.text
    assert "not a stage" in moved.json()["detail"]
    after = (await client.get(f"/v1/deals/{deal['id']}")).json()
    assert (after["stage"], after["status"]) == ("Lead in", "open")
    await assert_deals_match_their_stages(other)


async def test_a_deal_moved_while_its_stage_is_renamed_waits_for_the_rename(
    client: httpx.AsyncClient, make: Any, other: asyncpg.Connection
) -> None:
    """A rename gives the deals in the stage a new version: the move waits for the pipeline
    before it locks the deal, so the two never wait for each other (a deadlock, a 503)."""
    pipeline = await make.pipeline()
    lead_in, demo, won, lost = pipeline["stages"]
    deal = await make.deal(pipeline_id=pipeline["id"])
    renamed = [
        {"id": lead_in["id"], "name": "Inbound", "probability": "0.2"},
        {"id": demo["id"], "name": "Demo", "probability": "0.6"},
        {"id": won["id"], "name": "Won", "probability": "1", "is_won": True},
        {"id": lost["id"], "name": "Lost", "probability": "0", "is_lost": True},
    ]
    edited, moved = await _stage_edit_blocked_then_a_move(client, other, pipeline, deal, renamed, "Lead in", "FOR NO KEY UPDATE")
    assert (edited.status_code, moved.status_code) == (200, 200), (edited.text, moved.text)
    history = (await client.get(f"/v1/deals/{deal['id']}/history")).json()["items"]
    assert [(h["from_stage"], h["to_stage"]) for h in history] == [(None, "Lead in"), ("Inbound", "Demo")]


async def test_a_stage_removed_while_another_writer_puts_a_deal_in_it_is_409_not_500(
    client: httpx.AsyncClient, make: Any, other: asyncpg.Connection
) -> None:
    """A writer that does not lock the pipeline (another tool on the database): the stage's
    removal fails its foreign key and answers 409, as a stage holding deals does."""
    pipeline = await make.pipeline()
    lead_in, demo, won, lost = pipeline["stages"]
    deal = await make.deal(pipeline_id=pipeline["id"])
    held = other.transaction()
    await held.start()
    await other.execute("UPDATE deals SET stage_id = $1 WHERE id = $2", uuid.UUID(demo["id"]), uuid.UUID(deal["id"]))
    without_demo = [
        {"id": lead_in["id"], "name": "Lead in", "probability": "0.2"},
        {"id": won["id"], "name": "Won", "probability": "1", "is_won": True},
        {"id": lost["id"], "name": "Lost", "probability": "0", "is_lost": True},
    ]
    edit = asyncio.create_task(client.patch(f"/v1/pipelines/{pipeline['id']}", json={"stages": without_demo}))
    await until(lambda: _at_least(other, 1), "the pipeline PATCH waits")
    await held.commit()
    edited = await edit
    assert edited.status_code == 409, edited.text
    assert edited.headers["content-type"] == "application/problem+json"
    assert [s["name"] for s in (await client.get(f"/v1/pipelines/{pipeline['id']}")).json()["stages"]] == [
        "Lead in",
        "Demo",
        "Won",
        "Lost",
    ]


async def test_a_deal_created_in_a_pipeline_being_deleted_is_422_not_500(
    client: httpx.AsyncClient, make: Any, other: asyncpg.Connection
) -> None:
    pipeline = await make.pipeline()
    customer = await make.customer()
    # The DELETE passes its checks, then waits on a stage's row; meanwhile a deal is created in the pipeline.
    held = other.transaction()
    await held.start()
    await other.execute("SELECT 1 FROM pipeline_stages WHERE id = $1 FOR KEY SHARE", uuid.UUID(pipeline["stages"][0]["id"]))
    delete = asyncio.create_task(client.delete(f"/v1/pipelines/{pipeline['id']}"))
    await until(lambda: _at_least(other, 1), "the DELETE waits")
    body = {"customer_id": customer["id"], "title": "Late", "pipeline_id": pipeline["id"]}
    create = asyncio.create_task(client.post("/v1/deals", json=body))
    await until(lambda: _done_or_waiting(create, other), "the POST ends or waits")
    await held.commit()
    deleted, created = await asyncio.gather(delete, create)
    assert deleted.status_code == 204, deleted.text
    assert created.status_code == 422, created.text
    assert created.json()["errors"][0]["loc"] == ["body", "pipeline_id"]
    assert (await client.get("/v1/deals", params={"customer_id": customer["id"]})).json()["items"] == []
