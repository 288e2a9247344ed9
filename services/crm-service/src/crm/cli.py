"""`crm` admin CLI: migrations, API keys and `replay` (shared), and the CRM's own commands.

A command imports what it runs when it runs (the consumers, the import engine, the
repositories), so that `crm --help` and the key and outbox commands start without loading the
web application's modules."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from crm.config import CRMSettings
from crm.db import ApiKey, OutboxMessage, ProcessedEvent
from cxkit.cli import build_cli, shown
from cxkit.db import make_engine, make_session_factory
from cxkit.terminal import visible

if TYPE_CHECKING:
    import asyncpg

    from crm.customers.csv_import import ImportReport

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"
ERRORS_SHOWN = 50


def _projections(settings: Any) -> list[Any]:
    from crm.projections import projections

    return projections(settings)


def _live_consumers(settings: Any) -> dict[str, list[str]]:
    from crm.consumers import live_consumers

    return live_consumers(settings)


app = build_cli(
    "crm",
    CRMSettings,
    ALEMBIC_INI,
    ApiKey,
    processed_model=ProcessedEvent,
    projections=_projections,
    outbox_model=OutboxMessage,
    consumers=_live_consumers,
)
console = Console(stderr=True)


@app.command("import-customers")
def import_customers_command(
    file: Annotated[Path, typer.Argument(help="CSV with a header: email,name[,phone,company,lifecycle_stage,owner,tags,...]")],
    errors_csv: Annotated[Path | None, typer.Option(help="Write every failed row (line, email, reason) to this CSV.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Rows per transaction.")] = 5000,
    dry_run: Annotated[bool, typer.Option(help="Validate every row, create nothing.")] = False,
) -> None:
    """Import customers from CSV: each row is created and announced like `POST /v1/customers`.

    Columns: email and name (required), phone, company, lifecycle_stage, owner, source,
    campaign_id, external_id, survey_opt_out (true/false), tags (separated by ; or |), and
    attributes.<key> for free attributes. Rows that fail (invalid, duplicate email or
    external_id, unknown campaign) are reported with their line number; the others are
    imported. The same engine runs the import jobs of `POST /v1/imports`. Exit code 1 if any
    row failed, 2 if the file could not be read."""
    import asyncpg
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from crm.customers.csv_import import ImportFileError, count_rows, import_customers
    from cxkit.pg_pool import asyncpg_dsn

    try:
        total = count_rows(file)
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        console.print(f"[red]cannot read {escape(visible(str(file)))}: {escape(visible(str(exc)))}[/red]")
        raise typer.Exit(2) from None

    async def connect() -> asyncpg.Connection:
        dsn = asyncpg_dsn(CRMSettings().database_url)
        return await asyncpg.connect(dsn, server_settings={"application_name": "crm-import-customers", "jit": "off"})

    async def run() -> ImportReport:
        with Progress(
            TextColumn("[bold]importing customers"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("rows", total=total)
            return await import_customers(
                connect,
                file,
                on_rows=lambda n: progress.advance(task, n),
                batch_size=batch_size,
                dry_run=dry_run,
            )

    try:
        report = asyncio.run(run())
    except ImportFileError as exc:
        console.print(f"[red]{escape(visible(str(file)))}: {escape(visible(str(exc)))}[/red]")
        raise typer.Exit(2) from None
    _print_report(report, dry_run, errors_csv)
    if report.errors:
        raise typer.Exit(1)


@app.command("rebuild-interaction-stats")
def rebuild_interaction_stats_command() -> None:
    """Recompute every customer's interaction statistics (what the view shows) from the
    interactions themselves. They are kept up to date as interactions are written; this is for
    after a restore or a hand-made change. Writers wait while it runs."""
    from crm.interactions.repository import rebuild_stats

    async def run() -> int:
        engine = make_engine(CRMSettings().database_url)
        try:
            async with make_session_factory(engine)() as session, session.begin():
                return await rebuild_stats(session)
        finally:
            await engine.dispose()

    console.print(f"interaction statistics rebuilt for {asyncio.run(run())} customer(s)")


@app.command("rebuild-experience-counts")
def rebuild_experience_counts_command() -> None:
    """Recompute the counts of the CEM's reports the dashboard folds (`experience_counts`) from
    the experience events themselves. They are kept up to date as events are written; this is for
    after a restore or a hand-made change. Writers wait while it runs."""
    from crm.experience.repository import EXPERIENCE_COUNTS

    async def run() -> tuple[int, int]:
        engine = make_engine(CRMSettings().database_url)
        try:
            async with make_session_factory(engine)() as session, session.begin():
                return await EXPERIENCE_COUNTS.rebuild(session)
        finally:
            await engine.dispose()

    keys, wrong = asyncio.run(run())
    console.print(f"experience counts rebuilt: {keys} row(s); {wrong} were wrong")


def _print_report(report: ImportReport, dry_run: bool, errors_csv: Path | None) -> None:
    from cxkit.http.csv_export import neutralise

    verb = "valid" if dry_run else "created"
    console.print(f"{report.total} rows: {report.created} {verb}, {len(report.errors)} failed")
    if report.ignored_columns:
        console.print(f"[yellow]ignored columns: {escape(visible(', '.join(report.ignored_columns)))}[/yellow]")
    if report.errors:
        # The file's cells are shown as they are, never read as markup or acted on by the terminal.
        table = Table("line", "email", "reason", title="rows not imported")
        for error in report.errors[:ERRORS_SHOWN]:
            table.add_row(str(error.line), shown(error.email or ""), shown(error.reason))
        console.print(table)
        if len(report.errors) > ERRORS_SHOWN:
            console.print(f"... and {len(report.errors) - ERRORS_SHOWN} more" + ("" if errors_csv else " (see --errors-csv)"))
    if errors_csv is not None:
        with errors_csv.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["line", "email", "reason"])
            # Spreadsheet-safe, as the errors CSV of an import job (`GET /v1/imports/{id}/errors`).
            writer.writerows([e.line, neutralise(e.email or ""), neutralise(e.reason)] for e in report.errors)
        console.print(f"failed rows written to {errors_csv}")


if __name__ == "__main__":
    app()
