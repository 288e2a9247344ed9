"""Admin commands both services share (`crm ...`, `cem ...`): migrate, API keys, outbox requeue,
replay, dead letters, demo data. Each command imports what only it needs (Alembic, the HTTP
layer, the broker clients) when it runs: every command and `--help` start sooner."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import asyncpg
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import select, update
from typer.core import TyperGroup

from cxkit.db import database_error_cause, is_database_unavailable, make_engine, make_session_factory, utcnow
from cxkit.metrics import DLQ_REASONS
from cxkit.settings import ServiceSettings
from cxkit.terminal import visible

if TYPE_CHECKING:
    from cxkit.dlq import DeadLetter, Listing

console = Console(stderr=True)


def shown(value: str) -> Text:
    """`value` as a rich Text: printed as it is, no markup read in it (a `[/x]` in a table cell
    given as a plain string stopped the command with a MarkupError), and the characters a
    terminal would act on written as escapes (`cxkit.terminal.visible`)."""
    return Text(visible(value))


class ExistingKeyUnusable(Exception):
    """`api-keys create --key KEY`: a key with that secret exists, but not as asked."""


def _check_existing_key(row: Any, scopes: list[str]) -> None:
    """A stored key given again to `api-keys create --key` is fine only if requests with it pass
    with the scopes asked for. Otherwise the command says so (a script ensuring its key would
    report it ready while every request got 401 or 403), and leaves the key alone: restoring,
    extending or widening a key is a decision for a person, not a side effect of a create."""
    from cxkit.http.auth import SCOPES

    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ValueError(f"scopes must be among {SCOPES}, got {scopes}")
    who = f"the API key {row.prefix}... ({row.name!r})"
    again = "choose another key (or leave --key out for a new random one)"
    if row.revoked_at is not None:
        raise ExistingKeyUnusable(
            f"{who} was revoked at {row.revoked_at.isoformat(timespec='seconds')} and stays revoked: {again}"
        )
    if row.expires_at is not None and row.expires_at <= utcnow():
        raise ExistingKeyUnusable(f"{who} expired at {row.expires_at.isoformat(timespec='seconds')}: {again}")
    has, asked = ",".join(sorted(row.scopes)), ",".join(sorted(set(scopes)))
    if has != asked:
        raise ExistingKeyUnusable(
            f"{who} exists with scopes {has}, not {asked}; a key's scopes are not changed by a create: "
            f"revoke it (`api-keys revoke {row.prefix}`) and {again}"
        )


# Refused while connecting: the database named is not there, or the role or its password is wrong.
_CONNECT_REFUSALS = (
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidPasswordError,
)


def unreachable_database(exc: BaseException) -> str | None:
    """Why the database could not be reached (one line), if that is what `exc` says; else None."""
    cause = database_error_cause(exc)
    if is_database_unavailable(exc) or isinstance(cause, _CONNECT_REFUSALS):
        return f"{type(cause).__name__}: {cause}" if isinstance(cause, OSError) else str(cause)
    return None


def unreachable_broker(exc: BaseException) -> str | None:
    """Why the broker could not be reached (one line), if that is what `exc` says; else None."""
    from aiokafka.errors import KafkaConnectionError

    return str(exc) if isinstance(exc, KafkaConnectionError) else None


def positive_finite(value: float | None) -> float | None:
    """A typer callback: an option's number must be above 0 and finite (`nan` and `inf` pass
    click's own range checks, then fail in date arithmetic with a traceback); a usage error
    (exit code 2) otherwise."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a finite number above 0, not {value}")
    return value


def _hours_ago(hours: float | None) -> dt.datetime | None:
    """The time `hours` ago; None for no bound (none given, or before any date there is)."""
    if hours is None:
        return None
    try:
        return utcnow() - dt.timedelta(hours=hours)
    except OverflowError:
        return None


class _AdminCommands(TyperGroup):
    """A command that cannot reach its database or its broker ends with one line saying so and
    which setting names it (exit code 1), not with a traceback."""

    setting = "DATABASE_URL"
    broker_setting = "KAFKA_BOOTSTRAP_SERVERS"

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if (reason := unreachable_database(exc)) is not None:
                what = f"the database ({self.setting})"
            elif (reason := unreachable_broker(exc)) is not None:
                what = f"the broker ({self.broker_setting})"
            else:
                raise
            console.print(f"cannot reach {what}: {reason}", style="red", markup=False, soft_wrap=True)
            raise typer.Exit(1) from None


def build_cli(
    name: str,
    settings_factory: Callable[[], ServiceSettings],
    alembic_ini: Path,
    api_key_model: type[Any],
    *,
    processed_model: type[Any] | None = None,
    projections: Callable[[Any], list[Any]] | None = None,
    outbox_model: type[Any] | None = None,
    consumers: Callable[[Any], dict[str, list[str]]] | None = None,
) -> typer.Typer:
    """The shared commands; `consumers(settings)` (each live consumer's name and topics) adds
    `dlq list` and `dlq redrive`."""
    commands = type(
        f"{name.capitalize()}Commands",
        (_AdminCommands,),
        {"setting": f"{name.upper()}_DATABASE_URL", "broker_setting": f"{name.upper()}_KAFKA_BOOTSTRAP_SERVERS"},
    )
    app = typer.Typer(name=name, help=f"{name} administration.", no_args_is_help=True, add_completion=False, cls=commands)

    if outbox_model is not None:

        @app.command("outbox-requeue")
        def outbox_requeue(
            since_hours: Annotated[
                float | None,
                typer.Option(
                    callback=positive_finite,
                    help="Only events sent in the last N hours, however long ago they were written: the hours the broker "
                    "lost (default: all still kept, OUTBOX_RETENTION_HOURS).",
                ),
            ] = None,
        ) -> None:
            """Send already-sent events again: after the broker lost messages (a restored cluster,
            the memory-only dev broker). Consumers skip the events they already applied."""

            async def run() -> int:
                engine = make_engine(settings_factory().database_url)
                try:
                    async with make_session_factory(engine)() as session:
                        stmt = update(outbox_model).where(outbox_model.sent_at.is_not(None)).values(sent_at=None)
                        since = _hours_ago(since_hours)
                        if since is not None:
                            # By when it was sent (what a broker's loss follows, and what the
                            # retention deletes by), not when it was written: a backlog written
                            # before an outage and sent after it is in the hours lost.
                            stmt = stmt.where(outbox_model.sent_at >= since)
                        count = (await session.execute(stmt)).rowcount
                        await session.commit()
                        return int(count or 0)
                finally:
                    await engine.dispose()

            console.print(f"{name}: {asyncio.run(run())} event(s) queued to be sent again")

    if projections is not None and processed_model is not None:

        @app.command()
        def replay(
            yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
        ) -> None:
            """Rebuild this service's projections from the Kafka topics, from the beginning.
            Stop the service (or its consumers) first."""
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            from cxkit.replay import replay as run_replay

            settings = settings_factory()
            chosen = projections(settings)
            if not yes:
                names = ", ".join(p.consumer_name for p in chosen)
                typer.confirm(f"Reset and rebuild {names} from {settings.kafka_bootstrap_servers}?", abort=True)

            async def run() -> dict[str, int]:
                engine = make_engine(settings.database_url)
                try:
                    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
                        tasks: dict[str, Any] = {}

                        def report(consumer: str, done: int, total: int) -> None:
                            if consumer not in tasks:
                                tasks[consumer] = bar.add_task(consumer, total=total)
                            bar.update(tasks[consumer], completed=done, total=total)

                        return await run_replay(settings, make_session_factory(engine), processed_model, chosen, report)
                finally:
                    await engine.dispose()

            for consumer, count in asyncio.run(run()).items():
                console.print(f"[green]{consumer}: {count} messages replayed[/green]")

    if consumers is not None and processed_model is not None:
        _add_dlq_commands(app, settings_factory, processed_model, consumers)

    @app.command()
    def migrate(revision: Annotated[str, typer.Option(help="Target revision.")] = "heads") -> None:
        """Apply the database migrations (run before starting the service)."""
        from cxkit.migrations import upgrade

        settings = settings_factory()
        upgrade(alembic_ini, settings.database_url, revision)
        console.print(f"[green]{name}: database at {revision}[/green]")

    keys = typer.Typer(help="API keys.", no_args_is_help=True)
    app.add_typer(keys, name="api-keys")

    @keys.command("create")
    def create_key(
        name_: Annotated[str, typer.Option("--name", help="Who or what uses the key.")],
        scopes: Annotated[str, typer.Option(help="Comma-separated: read,write,admin.")] = "read",
        key: Annotated[str | None, typer.Option(help="Store this exact key (dev set-ups); a new random one otherwise.")] = None,
        expires_in_days: Annotated[
            float | None,
            typer.Option(
                min=0.001, callback=positive_finite, help="Refuse the key after this many days (default: until revoked)."
            ),
        ] = None,
    ) -> None:
        """Create an API key and print it once (only its hash is stored). With `--key`, a key
        that already exists with that secret is printed again if it is usable as asked (what
        `make run` relies on); if it was revoked, has expired or has other scopes, that is an
        error: a create never restores, extends or widens a key."""
        from cxkit.http.auth import create_api_key, hash_key

        expires_at = None if expires_in_days is None else utcnow() + dt.timedelta(days=expires_in_days)
        wanted = [s.strip() for s in scopes.split(",") if s.strip()]

        async def run() -> tuple[str, dt.datetime | None]:
            settings = settings_factory()
            engine = make_engine(settings.database_url)
            try:
                async with make_session_factory(engine)() as session:
                    if key is not None:
                        found = await session.scalar(select(api_key_model).where(api_key_model.key_hash == hash_key(key)))
                        if found is not None:
                            _check_existing_key(found, wanted)
                            return key, found.expires_at  # its own expiry, not the one asked for now
                    _, plaintext = await create_api_key(
                        session, api_key_model, name=name_, scopes=wanted, key=key, expires_at=expires_at
                    )
                    await session.commit()
                    return plaintext, expires_at
            finally:
                await engine.dispose()

        try:
            plaintext, refused_from = asyncio.run(run())
        except ExistingKeyUnusable as exc:
            console.print(shown(str(exc)), style="red")
            raise typer.Exit(1) from None
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        print(plaintext)
        if refused_from is not None:
            console.print(f"the key is refused from {refused_from.isoformat(timespec='seconds')}")

    @keys.command("list")
    def list_keys() -> None:
        """List keys (name, prefix, scopes, created, expires, revoked)."""

        async def run() -> list[Any]:
            engine = make_engine(settings_factory().database_url)
            try:
                async with make_session_factory(engine)() as session:
                    return list((await session.scalars(select(api_key_model).order_by(api_key_model.created_at))).all())
            finally:
                await engine.dispose()

        table = Table("id", "name", "prefix", "scopes", "created", "expires", "revoked")
        now = utcnow()
        for row in asyncio.run(run()):
            expires = ""
            if row.expires_at is not None:
                expires = row.expires_at.isoformat() + (" (expired)" if row.expires_at <= now else "")
            table.add_row(
                str(row.id),
                shown(row.name),
                row.prefix,
                ",".join(row.scopes),
                row.created_at.isoformat(),
                expires,
                row.revoked_at.isoformat() if row.revoked_at else "",
            )
        Console().print(table)

    @keys.command("revoke")
    def revoke_key(prefix: Annotated[str, typer.Argument(help="The key's prefix, as `list` shows it.")]) -> None:
        """Revoke every key with this prefix."""

        async def run() -> int:
            engine = make_engine(settings_factory().database_url)
            try:
                async with make_session_factory(engine)() as session:
                    rows = (await session.scalars(select(api_key_model).where(api_key_model.prefix == prefix))).all()
                    for row in rows:
                        row.revoked_at = utcnow()
                    await session.commit()
                    return len(rows)
            finally:
                await engine.dispose()

        count = asyncio.run(run())
        console.print(f"revoked {count} key(s)")
        if not count:
            raise typer.Exit(1)

    _add_seed_demo_command(app)
    return app


_VAR = Path("var")


def _add_seed_demo_command(app: typer.Typer) -> None:
    @app.command("seed-demo")
    def seed_demo(
        customers: Annotated[int, typer.Option(min=1, help="How many customers.")] = 500,
        seed: Annotated[int, typer.Option(help="Random seed: the same seed makes the same world.")] = 7,
        concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at once.")] = 8,
        anchor: Annotated[
            str | None,
            typer.Option(help="End of the 90 days of history, ISO date-time (default: VAR_DIR/demo-anchor, else now)."),
        ] = None,
        crm_url: Annotated[
            str | None, typer.Option(help="The CRM's base URL (default: CRM_URL, else http://127.0.0.1:$CRM_PORT, 8001).")
        ] = None,
        cem_url: Annotated[
            str | None, typer.Option(help="The CEM's base URL (default: CEM_URL, else http://127.0.0.1:$CEM_PORT, 8002).")
        ] = None,
        api_key: Annotated[
            str | None, typer.Option(help="An API key with the write scope on both (default: API_KEY, else VAR_DIR/dev-api-key).")
        ] = None,
        kafka_bootstrap: Annotated[
            str | None,
            typer.Option(
                help="Broker for the outside systems' events (default: KAFKA_BOOTSTRAP, else 127.0.0.1:$KAFKA_PORT, 9092)."
            ),
        ] = None,
        var_dir: Annotated[Path, typer.Option(help="Where `make run` keeps the dev API key and the demo's anchor.")] = _VAR,
    ) -> None:
        """Fill a running stack (both services) with demo data: customers, leads, deals,
        interactions, tasks, touchpoints, journeys, surveys, invitations, answers and feedback
        over 90 days, through the public APIs and outside-system events. Run again with the same
        seed and anchor, it adds nothing."""
        from cxkit import demo

        try:
            end = demo.anchor_of(anchor, var_dir)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--anchor") from None
        try:
            target = demo.target_from(var_dir, crm_url=crm_url, cem_url=cem_url, api_key=api_key, kafka_bootstrap=kafka_bootstrap)
            typer.echo(
                f"demo: {customers} customers, 90 days up to {end:%Y-%m-%d %H:%M}Z, into {target.crm_url}, {target.cem_url}"
            )
            started = time.monotonic()
            tally = asyncio.run(demo.fill(target, customers, end, seed, concurrency))
        except demo.DemoError as exc:
            console.print(f"demo failed: {exc}", style="red", markup=False, soft_wrap=True)
            raise typer.Exit(1) from None
        typer.echo("\n" + demo.summary(tally, time.monotonic() - started))


ReasonOption = Annotated[
    list[str] | None,
    typer.Option("--reason", help=f"Only these reason kinds (repeatable): {', '.join(DLQ_REASONS)}."),
]
ConsumerOption = Annotated[str | None, typer.Option("--consumer", help="Only this consumer's dead letters.")]


def _add_dlq_commands(
    app: typer.Typer,
    settings_factory: Callable[[], ServiceSettings],
    processed_model: type[Any],
    consumers: Callable[[Any], dict[str, list[str]]],
) -> None:
    dlq = typer.Typer(help="Dead letters: what the consumers sent to <topic>.dlq, and sending them again.", no_args_is_help=True)
    app.add_typer(dlq, name="dlq")

    @dlq.callback()
    def quiet_kafka_client() -> None:
        # The commands say themselves what went wrong (one line for a broker out of reach);
        # the Kafka client's own log lines would only repeat it.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    def chosen(consumer: str | None, reasons: list[str] | None) -> tuple[ServiceSettings, dict[str, list[str]], set[str]]:
        settings = settings_factory()
        live = consumers(settings)
        if consumer is not None and consumer not in live:
            console.print(f"[red]no consumer {consumer!r}; this service's: {', '.join(sorted(live))}[/red]")
            raise typer.Exit(2)
        unknown = sorted(set(reasons or ()) - set(DLQ_REASONS))
        if unknown:
            console.print(f"[red]unknown reason kind(s) {', '.join(unknown)}; one of {', '.join(DLQ_REASONS)}[/red]")
            raise typer.Exit(2)
        return settings, ({consumer: live[consumer]} if consumer else live), set(reasons or DLQ_REASONS)

    async def each_letter(settings: ServiceSettings, wanted: dict[str, list[str]], kinds: set[str]) -> AsyncIterator[DeadLetter]:
        """The dead letters of these consumers and reason kinds, one at a time as read."""
        from cxkit.dlq import read_dead_letters

        engine = make_engine(settings.database_url)
        try:
            async for letter in read_dead_letters(settings, make_session_factory(engine), processed_model, wanted):
                if letter.reason_kind in kinds:
                    yield letter
        finally:
            await engine.dispose()

    @dlq.command("list")
    def list_dead_letters(
        consumer: ConsumerOption = None,
        reason: ReasonOption = None,
        pending: Annotated[bool, typer.Option(help="Only those whose event has not been applied since.")] = False,
        limit: Annotated[int, typer.Option(min=0, help="Show the last N (0: only the counts).")] = 20,
        as_json: Annotated[bool, typer.Option("--json", help="Every one as a JSON line on stdout, no table.")] = False,
    ) -> None:
        """Counts per consumer and reason kind (and how many were applied since), then the last
        dead letters with their reason, original topic/partition/offset and event. Read one at a
        time: a DLQ of millions needs no more memory than one of ten."""
        from cxkit.dlq import Listing

        settings, wanted, kinds = chosen(consumer, reason)

        async def listing() -> Listing:
            found = Listing(0 if as_json else limit)
            async for letter in each_letter(settings, wanted, kinds):
                if pending and letter.applied:
                    continue
                if as_json:
                    print(json.dumps(letter.summary()))
                found.add(letter)
            return found

        found = asyncio.run(listing())
        if as_json:
            return
        totals = Table("consumer", "reason", "dead letters", "applied since", title=f"{found.total} dead letter(s)")
        for (who, kind), n in sorted(found.counts.items()):
            totals.add_row(shown(who), kind, str(n), str(found.applied[(who, kind)]))
        out = Console()
        out.print(totals)
        if limit and found.total:
            table = Table("dlq", "at", "consumer", "reason", "event", "applied")
            applied_text = {True: "yes", False: "no"}
            for letter in found.latest():
                event = f"{letter.event_type or '?'} {letter.event_id or '(none)'}"
                # What the event and its headers say is shown as it is, never acted on.
                table.add_row(
                    shown(letter.place),
                    letter.at.isoformat(timespec="seconds"),
                    shown(letter.consumer),
                    shown(letter.reason),
                    shown(event),
                    "unknown (too old)" if letter.too_old and not letter.applied else applied_text[letter.applied],
                )
            out.print(table)

    @dlq.command("redrive")
    def redrive_dead_letters(
        consumer: ConsumerOption = None,
        reason: ReasonOption = None,
        dry_run: Annotated[bool, typer.Option(help="Say what would be sent, send nothing.")] = False,
        yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    ) -> None:
        """Send dead letters again to their topic, after fixing what made them fail (a handler
        bug, an event type or field this version did not know). Only events not applied since
        go, each event once; every consumer of the topic skips an event it applied already, so
        only the one that failed applies it. Messages that are no event (`malformed`) stay."""
        from cxkit.dlq import redrive

        settings, wanted, kinds = chosen(consumer, reason)

        async def survey() -> tuple[dict[tuple[str, str | None], str], Counter[str]]:
            """Which letter of each event goes again (the first met), and how many of each kind;
            no message is kept."""
            once: dict[tuple[str, str | None], str] = {}
            tally: Counter[str] = Counter()
            async for letter in each_letter(settings, wanted, kinds):
                tally["found"] += 1
                tally["applied"] += letter.applied
                tally["too_old"] += letter.too_old and not letter.applied
                if letter.redrivable:
                    once.setdefault((letter.original_topic, letter.event_id), letter.place)
            return once, tally

        async def chosen_letters(once: dict[tuple[str, str | None], str]) -> AsyncIterator[DeadLetter]:
            """Read again: the letters the survey chose, still to send."""
            async for letter in each_letter(settings, wanted, kinds):
                if letter.redrivable and once.get((letter.original_topic, letter.event_id)) == letter.place:
                    yield letter

        once, tally = asyncio.run(survey())
        left = tally["found"] - tally["applied"] - tally["too_old"] - len(once)
        console.print(
            f"{tally['found']} dead letter(s): {len(once)} event(s) to send again, {tally['applied']} applied since, {left} "
            f"left (no event to send: malformed, or a repeat of one sent), {tally['too_old']} too old to send again safely "
            f"(their event is over {settings.processed_events_retention_days - 1} days old, by when it was first published "
            "or its `time`, however recently it was dead-lettered: PROCESSED_EVENTS_RETENTION_DAYS less a day)"
        )
        if dry_run or not once:
            return
        if not yes:
            typer.confirm(f"Send {len(once)} event(s) again to {settings.kafka_bootstrap_servers}?", abort=True)
        sent = asyncio.run(redrive(settings, chosen_letters(once)))
        console.print(f"[green]sent {sent} event(s) again[/green]")
