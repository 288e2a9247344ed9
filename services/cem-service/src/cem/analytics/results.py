"""A survey's results (`GET /v1/surveys/{id}/results`): per question, how many answered and
skipped it, and what they answered: each score of a rating with the mean, each option of a
choice, the newest text answers. Counted by the database (`results_repository`: whole days kept
per question and value, the parts of days a window cuts counted from the responses)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cem.analytics.results_repository import ResultsRepository, ValueRow, Window
from cem.analytics.results_schemas import (
    TEXTS_SHOWN,
    ChoiceResults,
    RatingResults,
    ResultsFilters,
    SurveyResults,
    TextAnswer,
    TextResults,
    ValueCount,
)
from cem.report_filters import ReportFilters
from cem.surveys.repository import SurveyRepository
from cxkit.http.problems import NotFound


def _share(count: int, answered: int) -> float:
    return round(count / answered, 4) if answered else 0.0


def _values(listed: list[str], counts: dict[str, int], answered: int) -> list[ValueCount]:
    """The listed values in their order (0 answers included), then any other the stored
    answers hold (the API lets no survey with answers change its questions), most given first."""
    others = sorted((v for v in counts if v not in set(listed)), key=lambda v: (-counts[v], v))
    return [ValueCount(value=v, count=counts.get(v, 0), share=_share(counts.get(v, 0), answered)) for v in [*listed, *others]]


def _counts(q: dict[str, Any], rows: list[ValueRow]) -> dict[str, int]:
    """Answers per score or option (a multi choice's picks, per option)."""
    counts: Counter[str] = Counter()
    kind = "pick" if q["type"] == "multi_choice" else "answered"
    for row in rows:
        if row.kind == kind:
            counts[row.value] += row.answers
    return counts


def _question(q: dict[str, Any], rows: list[ValueRow]) -> dict[str, Any]:
    """The summary of one of the survey's questions from its rows (answers of its type)."""
    answered = sum(r.answers for r in rows if r.kind == "answered")
    skipped = sum(r.answers for r in rows if r.kind == "skipped")
    base = {"id": q["id"], "type": q["type"], "text": q["text"], "answered": answered, "skipped": skipped}
    counts = _counts(q, rows)
    if q["type"] == "rating":
        total = sum(float(v) * n for v, n in counts.items())
        return base | {
            "scale_min": q["scale_min"],
            "scale_max": q["scale_max"],
            "mean": round(total / answered, 2) if answered else None,
            "values": _values([str(s) for s in range(q["scale_min"], q["scale_max"] + 1)], counts, answered),
        }
    if q["type"] in ("single_choice", "multi_choice"):
        return base | {"values": _values(q["options"], counts, answered)}
    return base | {"latest": []}


async def survey_results(session: AsyncSession, filters: ReportFilters) -> SurveyResults:
    """The results of the survey `filters` names (404 if there is none), in its window and at its
    touchpoint."""
    survey_id = filters.survey_id
    assert survey_id is not None
    survey = await SurveyRepository(session).get(survey_id)
    if survey is None:
        raise NotFound(f"survey {survey_id} does not exist")
    window = Window(survey_id, filters.touchpoint, filters.since, filters.until)
    repo = ResultsRepository(session)
    rows: dict[tuple[str, str], list[ValueRow]] = defaultdict(list)  # (question id, type as stored)
    responses = 0
    for row in await repo.value_counts(window):
        if row.kind == "response":
            responses += row.answers
        else:
            rows[(row.question_id, row.type)].append(row)
    summaries = [_question(q, rows.get((q["id"], q["type"]), [])) for q in survey.questions]
    for summary in summaries:
        if summary["type"] == "text" and summary["answered"]:
            found = await repo.latest_texts(window, summary["id"], TEXTS_SHOWN)
            summary["latest"] = [TextAnswer(**t) for t in found]

    models = {"rating": RatingResults, "single_choice": ChoiceResults, "multi_choice": ChoiceResults, "text": TextResults}
    return SurveyResults(
        survey_id=survey_id,
        filters=ResultsFilters(touchpoint=filters.touchpoint, from_=filters.since, to=filters.until),
        responses=responses,
        questions=[models[s["type"]](**s) for s in summaries],  # type: ignore[misc]
    )
