"""What the comments talk about (`GET /v1/analytics/themes`): the most mentioned words of the
comments that come with scored answers, each with how the answers that mention it score against
the other answers with a comment, tested as the key drivers are (Welch's t-test on the
per-answer values, Benjamini-Hochberg over the themes tested)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from cem.analytics import stats
from cem.analytics.drivers import ALPHA, DEFINITIONS, compare_levels, result_fields
from cem.analytics.repository import AnalyticsRepository
from cem.analytics.schemas import Filters
from cem.analytics.service import check_metric_survey
from cem.analytics.themes_repository import ThemeRepository
from cem.analytics.themes_schemas import Theme, ThemeReport
from cem.report_filters import ReportFilters


async def theme_report(session: AsyncSession, metric: str, filters: ReportFilters, *, limit: int, min_n: int) -> ThemeReport:
    await check_metric_survey(session, filters.survey_id, metric)
    found = await ThemeRepository(session).theme_stats(metric, filters, limit=limit)
    scored = await AnalyticsRepository(session).scored_answers(metric, filters)
    words = {t.stem: t.word for t in found.themes}
    compared = {
        r.key[1]: r for r in compare_levels(found.everyone, {("theme", t.stem): t.moments for t in found.themes}, min_n=min_n)
    }
    everyone = found.everyone
    return ThemeReport(
        metric=metric,  # type: ignore[arg-type]
        definition=DEFINITIONS[metric],
        filters=Filters.of(filters),
        min_n=min_n,
        n=everyone.n,
        # Two statements, so an answer stored between them may be counted in one only: never below 0.
        without_comment=max(scored - everyone.n, 0),
        score=stats.rounded(everyone.total / everyone.n if everyone.n else None),
        test="welch-t",
        adjustment="benjamini-hochberg",
        alpha=ALPHA,
        themes=[
            Theme(
                theme=words[t.stem],
                stem=t.stem,
                share=round(t.moments.n / everyone.n, 4),
                **result_fields(compared[t.stem]),  # type: ignore[arg-type]
            )
            for t in found.themes
        ],
    )
