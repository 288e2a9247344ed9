"""Follow-up SLAs: when a follow-up must be closed, by the survey's metric and the answer's score
band. A band is `{"max_score", "hours"}`; bands are kept in increasing order of `max_score` and
the first one holding the score gives the due time (e.g. NPS 0-3 in 12 h, 4-6 in 24 h)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import ConfigDict, Field

from cxkit.fields import InputModel, Integer

Metric = Literal["nps", "csat", "ces"]


class SlaBand(InputModel):
    """Answers scoring up to `max_score` are followed up within `hours`."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"max_score": 6, "hours": 24}]})

    max_score: Integer = Field(ge=0, le=10, description="The highest score of the band (on the metric's scale).")
    hours: Integer = Field(ge=1, le=24 * 90, description="Hours after the follow-up is raised until it is due.")


def in_order(bands: Sequence[SlaBand]) -> list[SlaBand]:
    """The bands in increasing order of `max_score` (the order they are read in), whatever order
    they came in. Two with one `max_score` are a ValueError: the first would always win, the other
    never be read."""
    ordered = sorted(bands, key=lambda b: b.max_score)
    for before, band in itertools.pairwise(ordered):
        if band.max_score == before.max_score:
            raise ValueError(f"two bands have max_score {band.max_score}; give each band its own max_score")
    return ordered


def band_hours(bands: Sequence[Mapping[str, Any] | SlaBand] | None, score: float) -> int | None:
    """The hours of the first band holding `score`, or None."""
    for band in bands or ():
        b = band if isinstance(band, SlaBand) else SlaBand.model_validate(band)
        if score <= b.max_score:
            return b.hours
    return None


def due_at(
    raised_at: dt.datetime,
    metric: str,
    score: float,
    survey_bands: Sequence[Mapping[str, Any]] | None,
    default_policy: Mapping[str, Sequence[SlaBand]],
) -> dt.datetime | None:
    """When a follow-up raised at `raised_at` for `score` on `metric` is due: the survey's own
    bands first, then the default policy's for the metric; None when neither holds the score."""
    hours = band_hours(survey_bands, score)
    if hours is None:
        hours = band_hours(default_policy.get(metric), score)
    return None if hours is None else raised_at + dt.timedelta(hours=hours)
