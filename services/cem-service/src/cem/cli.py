"""`cem` admin CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.console import Console

from cem.config import CEMSettings
from cem.customers.service import rebuild_experience_totals
from cem.db import ApiKey, OutboxMessage, ProcessedEvent
from cem.projections import projections
from cem.scheduler import InvitationScheduler, SchedulerRound
from cxkit.cli import build_cli
from cxkit.db import make_engine, make_session_factory

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"

app = build_cli(
    "cem", CEMSettings, ALEMBIC_INI, ApiKey, processed_model=ProcessedEvent, projections=projections, outbox_model=OutboxMessage
)
console = Console(stderr=True)


@app.command("run-scheduler-once")
def run_scheduler_once() -> None:
    """Send the scheduled invitations that are due and re-invite recurring surveys' customers
    who are due again, once (the web process does this every CEM_SCHEDULER_INTERVAL_S)."""

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
        f"[green]sent {done.sent}, cancelled {done.cancelled}, re-invited {done.reinvited}; suppressed: {suppressed}[/green]"
    )


@app.command("rebuild-experience-totals")
def rebuild_experience_totals_command() -> None:
    """Recompute every customer's experience totals (the counts and score averages the
    experience view shows) from the responses, scores, feedback, follow-ups and suppressions
    themselves. The database keeps them up to date as those rows are written; this is for after
    a restore or a change made by hand. Writers of those tables wait while it runs."""

    async def run() -> tuple[int, int]:
        engine = make_engine(CEMSettings().database_url)
        try:
            async with make_session_factory(engine)() as session, session.begin():
                with console.status("recomputing experience totals from the rows"):
                    return await rebuild_experience_totals(session)
        finally:
            await engine.dispose()

    customers, corrected = asyncio.run(run())
    console.print(f"[green]experience totals rebuilt for {customers} customer(s); {corrected} were wrong[/green]")


if __name__ == "__main__":
    app()
