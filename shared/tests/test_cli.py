"""The shared admin commands (`cxkit.cli.build_cli`) run in-process against the kit's database:
`outbox-requeue` picks the events the broker may have lost, and refuses a window that is none."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from cxkit.cli import build_cli
from cxkit.db import utcnow
from cxkit.settings import ServiceSettings

from .conftest import ApiKey, Outbox

Sessions = async_sessionmaker[AsyncSession]


def kit_cli(settings: ServiceSettings) -> typer.Typer:
    return build_cli("kit", lambda: settings, Path("alembic.ini"), ApiKey, outbox_model=Outbox)


async def invoke(app: typer.Typer, *args: str) -> tuple[int, str]:
    """The command's exit code and what it printed; run in a thread, as it runs its own event loop."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    return result.exit_code, result.output


async def test_outbox_requeue_since_hours_picks_the_events_sent_in_that_window_whatever_their_age(
    kit_settings: ServiceSettings, sessions: Sessions
) -> None:
    """The broker lost its last 3 hours: what was sent in them goes again, however long ago it
    was written (a backlog written 20 h ago and sent 2 h ago, after an outage); what was sent
    before them, or never, is left alone."""
    now = utcnow()
    hours = dt.timedelta(hours=1)
    written_sent = {
        "backlog sent late": (now - 20 * hours, now - 2 * hours),
        "sent just now": (now - 1 * hours, now - 0.5 * hours),
        "sent long ago": (now - 1 * hours, now - 5 * hours),  # (a clock step back: sent_at is what counts)
        "old and sent long ago": (now - 30 * hours, now - 29 * hours),
        "unsent": (now - 20 * hours, None),
    }
    async with sessions() as session, session.begin():
        for name, (created_at, sent_at) in written_sent.items():
            session.add(
                Outbox(
                    event_id=uuid.uuid4(),
                    topic="cxkit-test.requeue",
                    key=name,
                    event_type="customer.updated",
                    value=b"{}",
                    headers={},
                    created_at=created_at,
                    sent_at=sent_at,
                )
            )

    code, output = await invoke(kit_cli(kit_settings), "outbox-requeue", "--since-hours", "3")
    assert code == 0, output
    assert "2 event(s) queued" in output, output
    async with sessions() as session:
        rows = {row.key: row.sent_at for row in (await session.scalars(select(Outbox))).all()}
    assert {name for name, sent_at in rows.items() if sent_at is None} == {"backlog sent late", "sent just now", "unsent"}


@pytest.mark.parametrize("hours", ["0", "-5", "nan", "inf", "-inf", "soon"])
async def test_outbox_requeue_refuses_a_window_that_is_no_positive_finite_number_of_hours(
    kit_settings: ServiceSettings, sessions: Sessions, hours: str
) -> None:
    """`--since-hours 0` or `-5` queued nothing and said so with exit code 0 (as if nothing had
    been lost); `nan` and `inf` ended in a traceback. Each is refused as a usage error, and
    nothing is queued."""
    async with sessions() as session, session.begin():
        session.add(
            Outbox(
                event_id=uuid.uuid4(),
                topic="cxkit-test.requeue",
                key="k",
                event_type="customer.updated",
                value=b"{}",
                headers={},
                created_at=utcnow(),
                sent_at=utcnow(),
            )
        )
    code, output = await invoke(kit_cli(kit_settings), "outbox-requeue", "--since-hours", hours)
    assert code == 2, output
    assert "--since-hours" in output and "Traceback" not in output, output
    assert "queued" not in output, output
    async with sessions() as session:
        assert (await session.scalar(select(Outbox.sent_at))) is not None


@pytest.mark.parametrize("days", ["nan", "inf"])
async def test_api_keys_create_refuses_an_expiry_that_is_no_finite_number_of_days(
    kit_settings: ServiceSettings, sessions: Sessions, days: str
) -> None:
    """`--expires-in-days` refused 0 and below already; `nan` and `inf` passed that check and
    ended in a traceback. Refused as a usage error now, and no key is made."""
    code, output = await invoke(kit_cli(kit_settings), "api-keys", "create", "--name", "n", "--expires-in-days", days)
    assert code == 2, output
    assert "--expires-in-days" in output and "Traceback" not in output, output
    async with sessions() as session:
        assert (await session.scalar(select(ApiKey.id))) is None
