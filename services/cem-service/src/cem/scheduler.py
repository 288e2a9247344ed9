"""The invitation scheduler: sends delayed invitations when they fall due (cancelling those whose
survey closed meanwhile, holding those of a survey back in draft until it is active again),
re-invites at each relationship survey's `recurrence_days`, reminds invitations not answered yet
(a survey's `reminders`), announces follow-ups past their SLA (`followup.overdue`) and asks followed-up
customers again (a survey's `resurvey_after_days`). Runs as a task in the web process (`CEM_RUN_SCHEDULER`)
or once from the CLI (`cem run-scheduler-once`); several may run at once (rows and surveys are
locked with SKIP LOCKED on PostgreSQL, so nothing is sent twice)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cem.config import CEMSettings
from cem.followups.service import announce_overdue
from cem.invitations.reminders import send_reminders
from cem.surveys.repository import SurveyRepository
from cem.triggers.service import (
    Outcome,
    recurring_surveys,
    reinvite_recurring,
    resurvey_followed_up,
    resurveying_surveys,
    send_due_invitations,
)
from cxkit.db import utcnow

log = logging.getLogger(__name__)


@dataclass
class SchedulerRound:
    """What one round did."""

    sent: int = 0
    cancelled: int = 0
    reinvited: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)
    reminded: int = 0
    reminders_suppressed: int = 0
    overdue: int = 0
    resurveyed: int = 0
    opened: int = 0  # drafts whose opens_at came
    closed: int = 0  # surveys whose closes_at came


class InvitationScheduler:
    def __init__(self, settings: CEMSettings, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.session_factory = session_factory

    async def run_once(self) -> SchedulerRound:
        """Open the drafts whose `opens_at` came and close the surveys whose `closes_at` came;
        send everything due, in batches of one transaction each; re-invite every recurring
        survey's customers who are due again (one transaction per survey and batch); remind
        invitations not answered; ask followed-up customers again; announce overdue follow-ups."""
        done = SchedulerRound()
        batch = self.settings.scheduler_batch_size
        async with self.session_factory() as session, session.begin():
            done.opened = await SurveyRepository(session).open_due()
            done.closed = await SurveyRepository(session).close_due()
        while True:
            async with self.session_factory() as session, session.begin():
                sending = await send_due_invitations(session, self.settings, batch)
            done.sent += sending.sent
            done.cancelled += sending.cancelled
            if sending.sent + sending.cancelled < batch:
                break
        done.reinvited += await self._invite_per_survey(recurring_surveys, reinvite_recurring, done)
        await self._remind(done, batch)
        done.resurveyed += await self._invite_per_survey(resurveying_surveys, resurvey_followed_up, done)
        while True:
            async with self.session_factory() as session, session.begin():
                overdue = await announce_overdue(session, utcnow(), batch)
            done.overdue += overdue
            if overdue < batch:
                break
        return done

    async def _invite_per_survey(
        self,
        surveys_of: Callable[[AsyncSession], Awaitable[list[uuid.UUID]]],
        invite: Callable[[AsyncSession, CEMSettings, uuid.UUID, int], Awaitable[Outcome]],
        done: SchedulerRound,
    ) -> int:
        """`invite` each survey `surveys_of` lists, in batches of one transaction each (per survey,
        until a batch judges fewer than a full one); suppressions are added to `done`. Returns the
        invitations made."""
        batch = self.settings.scheduler_batch_size
        invited = 0
        async with self.session_factory() as session:
            surveys = await surveys_of(session)
        for survey_id in surveys:
            while True:
                async with self.session_factory() as session, session.begin():
                    outcome = await invite(session, self.settings, survey_id, batch)
                invited += outcome.invited
                for reason, n in outcome.suppressed.items():
                    done.suppressed[reason] = done.suppressed.get(reason, 0) + n
                if outcome.judged < batch:
                    break
        return invited

    async def _remind(self, done: SchedulerRound, batch: int) -> None:
        """Each active survey with reminders, in batches of one transaction each."""
        async with self.session_factory() as session:
            surveys = await SurveyRepository(session).active_with_reminders()
        for survey in surveys:
            while True:
                async with self.session_factory() as session, session.begin():
                    reminding = await send_reminders(session, self.settings, survey, batch)
                done.reminded += reminding.reminded
                done.reminders_suppressed += reminding.suppressed
                if reminding.reminded + reminding.suppressed < batch:
                    break

    async def run(self) -> None:
        """Rounds every `CEM_SCHEDULER_INTERVAL_S` until cancelled; a failed round is logged and retried."""
        while True:
            try:
                done = await self.run_once()
                if (
                    done.sent
                    or done.cancelled
                    or done.reinvited
                    or done.suppressed
                    or done.reminded
                    or done.overdue
                    or done.resurveyed
                    or done.closed
                    or done.opened
                ):
                    log.info(
                        "scheduler round",
                        extra={
                            "sent": done.sent,
                            "cancelled": done.cancelled,
                            "reinvited": done.reinvited,
                            "suppressed": done.suppressed,
                            "reminded": done.reminded,
                            "reminders_suppressed": done.reminders_suppressed,
                            "overdue": done.overdue,
                            "resurveyed": done.resurveyed,
                            "surveys_opened": done.opened,
                            "surveys_closed": done.closed,
                        },
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("scheduler round failed, retrying", extra={"error": repr(exc)})
            await asyncio.sleep(self.settings.scheduler_interval_s)
