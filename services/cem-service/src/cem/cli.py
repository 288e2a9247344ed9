"""`cem` admin CLI.

A command imports what it runs when it runs (the consumers, the scheduler, the services), so
that `cem --help` and the key and outbox commands start without loading the web application's
modules."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console

from cem.config import CEMSettings
from cem.db import ApiKey, OutboxMessage, ProcessedEvent
from cxkit.cli import build_cli
from cxkit.db import make_engine, make_session_factory

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from cem.scheduler import SchedulerRound

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


def _projections(settings: Any) -> list[Any]:
    from cem.projections import projections

    return projections(settings)


def _live_consumers(settings: Any) -> dict[str, list[str]]:
    from cem.consumers import live_consumers

    return live_consumers(settings)


app = build_cli(
    "cem",
    CEMSettings,
    ALEMBIC_INI,
    ApiKey,
    processed_model=ProcessedEvent,
    projections=_projections,
    outbox_model=OutboxMessage,
    consumers=_live_consumers,
)
console = Console(stderr=True)
T = TypeVar("T")


async def _in_transaction(status: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`work` on a session of the configured database, in one transaction, under a spinner."""
    engine = make_engine(CEMSettings().database_url)
    try:
        async with make_session_factory(engine)() as session, session.begin():
            with console.status(status):
                return await work(session)
    finally:
        await engine.dispose()


@app.command("run-scheduler-once")
def run_scheduler_once() -> None:
    """Send the scheduled invitations that are due and re-invite recurring surveys' customers
    who are due again, once (the web process does this every CEM_SCHEDULER_INTERVAL_S)."""
    from cem.scheduler import InvitationScheduler

    async def run() -> SchedulerRound:
        settings = CEMSettings()
        engine = make_engine(settings.database_url)
        try:
            return await InvitationScheduler(settings, make_session_factory(engine)).run_once()
        finally:
            await engine.dispose()

    done = asyncio.run(run())
    suppressed = ", ".join(f"{reason} {n}" for reason, n in sorted(done.suppressed.items())) or "none"
    console.print(
        f"[green]sent {done.sent}, cancelled {done.cancelled}, re-invited {done.reinvited}; suppressed: {suppressed}; "
        f"surveys opened (opens_at came): {done.opened}, closed (closes_at came): {done.closed}[/green]"
    )


@app.command("rebuild-experience-totals")
def rebuild_experience_totals_command() -> None:
    """Recompute every customer's experience totals (the counts and score averages the
    experience view shows) from the responses, scores, feedback, follow-ups and suppressions
    themselves. The database keeps them up to date as those rows are written; this is for after
    a restore or a change made by hand. Writers of those tables wait while it runs."""
    from cem.customers.service import rebuild_experience_totals

    customers, corrected = asyncio.run(_in_transaction("recomputing experience totals from the rows", rebuild_experience_totals))
    console.print(f"[green]experience totals rebuilt for {customers} customer(s); {corrected} were wrong[/green]")


@app.command("rebuild-score-days")
def rebuild_score_days_command() -> None:
    """Recompute the scores summed per survey, touchpoint, day and category (what the NPS, CSAT
    and CES reports read) from the scores themselves. The database keeps them up to date as
    answers are written; this is for after a restore or a change made by hand. Writers of
    answers wait while it runs."""
    from cem.responses.service import rebuild_score_days

    days, corrected = asyncio.run(_in_transaction("recomputing the scores per day from the scores", rebuild_score_days))
    console.print(f"[green]scores per day rebuilt: {days} row(s); {corrected} were wrong[/green]")


@app.command("rebuild-answer-days")
def rebuild_answer_days_command() -> None:
    """Recompute the answers counted per survey, touchpoint, day, question and value (what the
    survey results read) from the responses themselves. The database keeps them up to date as
    answers are written; this is for after a restore or a change made by hand. Writers of
    answers wait while it runs."""
    from cem.responses.service import rebuild_answer_days

    keys, corrected = asyncio.run(_in_transaction("recomputing the answers per day from the responses", rebuild_answer_days))
    console.print(f"[green]answers per day rebuilt: {keys} row(s); {corrected} were wrong[/green]")


if __name__ == "__main__":
    app()
