"""What the CEM's reports are cut by: one survey, one touchpoint and a window on time. One value
(`ReportFilters`) carries them from the query string (`report_filters_query`) through the
services to the SQL (`ReportFilters.where`), and the dashboard's form makes the same value, so
a filter is read, checked and applied one way everywhere.

No `from __future__ import annotations` here: the query reader's parameters are annotated with
objects made when it is, which FastAPI must see as objects, not as names to look up."""

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Query

from cem.fields import From, To, check_window
from cxkit.db import window_conditions
from cxkit.fields import QueryText

SURVEY_EXAMPLE = "2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c"

TouchpointFilter = Annotated[
    QueryText | None, Query(max_length=100, description="Only answers about this touchpoint (key).", examples=["checkout"])
]


@dataclass(frozen=True, slots=True)
class ReportFilters:
    """A report's filters; None is no filter. The window is `since` inclusive, `until`
    exclusive; one whose end is not after its start is refused when the value is made (422
    naming `to`), so a service never sees it."""

    survey_id: uuid.UUID | None = None
    touchpoint: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def __post_init__(self) -> None:
        check_window(self.since, self.until)

    def unwindowed(self) -> "ReportFilters":
        """The same survey and touchpoint over the whole time line, for a caller that cuts the
        window its own way."""
        return ReportFilters(self.survey_id, self.touchpoint)

    def where(self, *, survey: Any, touchpoint: Any, at: Any) -> list[Any]:
        """The filters as SQL conditions on a table's survey, touchpoint and time columns."""
        conditions = window_conditions(at, self.since, self.until)
        if self.survey_id is not None:
            conditions.append(survey == self.survey_id)
        if self.touchpoint is not None:
            conditions.append(touchpoint == self.touchpoint)
        return conditions

    def text_where(self, *, survey: str, touchpoint: str, at: str) -> tuple[str, dict[str, Any]]:
        """The filters as `AND ...` conditions of a textual statement on the named columns, and
        their parameters (`:survey_id`, `:touchpoint`, `:since`, `:until`)."""
        given = (
            (survey, "=", "survey_id", self.survey_id),
            (touchpoint, "=", "touchpoint", self.touchpoint),
            (at, ">=", "since", self.since),
            (at, "<", "until", self.until),
        )
        used = [(column, operator, name, value) for column, operator, name, value in given if value is not None]
        return "".join(f" AND {column} {operator} :{name}" for column, operator, name, _ in used), {
            name: value for _, _, name, value in used
        }


def report_filters_query(survey: str) -> Callable[..., Awaitable[ReportFilters]]:
    """A FastAPI dependency reading `ReportFilters` from the query: `from`, `to`, `survey_id`
    (described as `survey`: what of the survey the report counts) and `touchpoint`."""

    async def read(  # async: FastAPI would run a plain function in a thread
        since: From = None,
        until: To = None,
        survey_id: Annotated[uuid.UUID | None, Query(description=survey, examples=[SURVEY_EXAMPLE])] = None,
        touchpoint: TouchpointFilter = None,
    ) -> ReportFilters:
        return ReportFilters(survey_id, touchpoint, since, until)

    return read
