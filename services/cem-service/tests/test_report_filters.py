"""The reports' filters (`cem.report_filters.ReportFilters`): one value read from the query,
checked once, applied the same way by every report and said back in its `filters`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.dialects import postgresql

from cem.report_filters import ReportFilters
from cem.responses.models import Score
from cxkit.http.problems import ProblemError

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 11, 9, tzinfo=dt.UTC)
SURVEY = uuid.UUID("2f4e6a8c-0b1d-4e3f-8a5c-7d9e1f3a5b7c")


def _sql(conditions: list[Any]) -> list[str]:
    return [str(c.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})) for c in conditions]


@pytest.mark.parametrize("until", [T0, T0 - dt.timedelta(seconds=1)])
def test_a_window_whose_end_is_not_after_its_start_cannot_be_made(until: dt.datetime) -> None:
    with pytest.raises(ProblemError) as refused:
        ReportFilters(since=T0, until=until)
    assert refused.value.status == 422
    assert refused.value.extra["errors"] == [{"loc": ["query", "to"], "msg": "`to` must be after `from`", "type": "value_error"}]


def test_the_filters_as_sql_on_any_table() -> None:
    filters = ReportFilters(SURVEY, "checkout", T0, T1)
    assert _sql(filters.where(survey=Score.survey_id, touchpoint=Score.touchpoint, at=Score.submitted_at)) == [
        "scores.submitted_at >= '2026-11-02 00:00:00+00:00'",
        "scores.submitted_at < '2026-11-09 00:00:00+00:00'",
        f"scores.survey_id = '{SURVEY}'",
        "scores.touchpoint = 'checkout'",
    ]
    # No filter, no condition; the empty touchpoint key is a filter (answers without one).
    assert ReportFilters().where(survey=Score.survey_id, touchpoint=Score.touchpoint, at=Score.submitted_at) == []
    assert _sql(
        ReportFilters(touchpoint="").where(survey=Score.survey_id, touchpoint=Score.touchpoint, at=Score.submitted_at)
    ) == ["scores.touchpoint = ''"]
    assert filters.unwindowed() == ReportFilters(SURVEY, "checkout")
    assert filters.text_where(survey="s.survey_id", touchpoint="s.touchpoint", at="s.at") == (
        " AND s.survey_id = :survey_id AND s.touchpoint = :touchpoint AND s.at >= :since AND s.at < :until",
        {"survey_id": SURVEY, "touchpoint": "checkout", "since": T0, "until": T1},
    )
    assert ReportFilters(until=T1).text_where(survey="a", touchpoint="b", at="c") == (" AND c < :until", {"until": T1})


async def test_every_report_reads_checks_and_says_back_the_same_filters(client: httpx.AsyncClient, make: Any) -> None:
    surveys = {kind: (await make.survey(kind))["id"] for kind in ("nps", "csat", "ces")}
    window = {"from": "2026-11-02T00:00:00Z", "to": "2026-11-09T00:00:00Z"}
    reports = [
        ("/v1/analytics/nps", "nps"),
        ("/v1/analytics/csat", "csat"),
        ("/v1/analytics/ces", "ces"),
        ("/v1/analytics/recovery", "nps"),
        ("/v1/analytics/suppressions", "csat"),
        ("/v1/analytics/themes", "ces"),
        ("/v1/analytics/drivers", "nps"),
    ]
    for path, kind in reports:
        metric = {"metric": kind} if path.endswith(("/themes", "/drivers")) else {}
        r = await client.get(path, params={**metric, **window, "survey_id": surveys[kind], "touchpoint": "checkout"})
        assert r.status_code == 200, (path, r.text)
        assert r.json()["filters"] == {"survey_id": surveys[kind], "touchpoint": "checkout", **window}, path
        inverted = await client.get(path, params={**metric, "from": window["to"], "to": window["from"]})
        assert inverted.status_code == 422, (path, inverted.text)
        assert inverted.json()["errors"] == [{"loc": ["query", "to"], "msg": "`to` must be after `from`", "type": "value_error"}]
    results = f"/v1/surveys/{surveys['nps']}/results"
    r = await client.get(results, params={**window, "touchpoint": "checkout"})
    assert r.json()["filters"] == {"touchpoint": "checkout", **window}
    assert (await client.get(results, params={"from": window["to"], "to": window["from"]})).status_code == 422
