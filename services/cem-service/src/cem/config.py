"""cem-service settings: environment variables prefixed `CEM_`."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from cem.followups.sla import Metric, SlaBand, in_order
from cxkit.settings import ServiceSettings


class CEMSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CEM_", extra="ignore")

    service_name: str = "cem-service"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/cem"
    public_base_url: str = Field("http://127.0.0.1:8002", description="Base of respondent links (`/r/{token}`).")
    consumer_group: str = Field("cem-service", description="Kafka consumer group of this service.")
    invitation_ttl_days: int = Field(30, description="Days an invitation link stays valid.")
    fatigue_days: int = Field(
        7, description="At most one invitation per customer per this many days, across all surveys (0 disables)."
    )
    run_scheduler: bool = Field(
        True,
        description="Run the invitation scheduler inside the web process: sends delayed invitations when due and "
        "re-invites at each survey's `recurrence_days`.",
    )
    scheduler_interval_s: float = Field(15.0, gt=0, description="Seconds between two rounds of the invitation scheduler.")
    scheduler_batch_size: int = Field(
        500, ge=1, description="Invitations the scheduler sends (or customers it re-invites per survey) per transaction."
    )
    followup_sla: dict[Metric, list[SlaBand]] = Field(
        default_factory=lambda: {
            "nps": [{"max_score": 6, "hours": 24}],
            "csat": [{"max_score": 2, "hours": 24}],
            "ces": [{"max_score": 2, "hours": 48}],
        },
        validate_default=True,
        description="The default follow-up SLA per survey metric (JSON): score bands, each `max_score` and `hours`; a "
        "follow-up is due `hours` after it is raised, by the first band holding its score. A survey's `followup_sla` "
        "comes first. A metric left out: its follow-ups have no due time. Bands are read in increasing order of "
        "`max_score`, whatever order they are given in; two bands of a metric with the same `max_score` are refused "
        "at startup.",
    )
    followup_link_window_hours: float = Field(
        72.0,
        ge=0,
        description="A detractor answer given under an address no customer was known by is followed up when the CRM "
        "announces the customer with that address, if it was given at most this many hours before (its SLA runs from "
        "then); an older one is not. 0: never.",
    )
    resurvey_catch_up_days: int = Field(
        7,
        ge=1,
        le=365,
        description="A closed follow-up is re-surveyed (its survey's `resurvey_after_days`) only within this many days "
        "after it fell due: what a scheduler stopped for longer, or a survey paused for longer, missed is not caught up. "
        "Only follow-ups closed while their survey's re-survey was on are re-surveyed at all.",
    )
    followup_action_types: list[str] = Field(
        default_factory=lambda: ["call", "email", "meeting", "sms", "chat"],
        description="Interaction types that count as acting on a follow-up (the first one with the customer after it "
        "was raised is its first action, in `/v1/analytics/recovery`), JSON list.",
    )

    @field_validator("followup_sla")
    @classmethod
    def _bands_in_order(cls, policy: dict[Metric, list[SlaBand]]) -> dict[Metric, list[SlaBand]]:
        """Each metric's bands in increasing order of `max_score` (the order they are read in, as a survey's own
        bands are kept), whatever order they came in; two with one `max_score` are a startup error (the first
        one would always win, the other never be read)."""
        ordered: dict[Metric, list[SlaBand]] = {}
        for metric, bands in policy.items():
            try:
                ordered[metric] = in_order(bands)
            except ValueError as exc:
                raise ValueError(f"CEM_FOLLOWUP_SLA: {metric}: {exc}") from None
        return ordered
