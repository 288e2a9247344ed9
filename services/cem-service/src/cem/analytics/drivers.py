"""Key-driver analysis: which factors go with a higher or lower NPS, CSAT or CES.

Each factor level (visited touchpoint X, had interaction type Y, journey stage s, lifecycle stage,
open-deal band, CRM tag) splits the answers in two; the effect is the difference of the metric
between the answers with the level and the rest, with Welch's t-test (unequal variances) on the
per-answer values, from the database's sufficient statistics (a level that splits the scores
perfectly, no spread on either side but different scores, is a certain difference: p = 0, as
scipy gives). The p-values of all tested levels are then adjusted together (Benjamini-Hochberg).
scipy.special is imported when a report is asked for, never at start-up."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cem.analytics import stats
from cem.analytics.drivers_repository import DriverRepository, Moments
from cem.analytics.drivers_schemas import DriverFactor, DriverReport
from cem.analytics.schemas import Filters, Interval95
from cem.analytics.service import check_metric_survey
from cem.report_filters import ReportFilters

ALPHA = 0.05
# Fewest answers with and without a level (or a theme) for it to be tested, unless asked otherwise.
MIN_N = 10
DEFINITIONS = {
    "nps": "Per answer: promoter +100, passive 0, detractor -100 (their mean is the NPS). effect = NPS of the answers "
    "with the level - NPS of the other answers, in NPS points.",
    "csat": "Per answer: 100 if positive (4-5), else 0 (their mean is the CSAT). effect = CSAT of the answers with the "
    "level - CSAT of the other answers, in percentage points.",
    "ces": "Per answer: the 1-7 effort score (7 = very easy). effect = mean CES of the answers with the level - mean "
    "CES of the other answers, in scale points.",
}


@dataclass(frozen=True)
class WelchTest:
    effect: float
    ci95: tuple[float, float]
    p_value: float


def _mean(m: Moments) -> float | None:
    return m.total / m.n if m.n else None


def _variance(m: Moments) -> float:
    """Sample variance from the exact integer moments (no cancellation: n*ss - s^2 is exact)."""
    return (m.n * m.total_sq - m.total * m.total) / (m.n * (m.n - 1))


def welch_from_moments(group: Moments, rest: Moments) -> WelchTest | None:
    """Welch's t-test of mean(group) - mean(rest), with its 95% interval on Welch-Satterthwaite
    degrees of freedom. Both need n >= 2. What scipy.stats.ttest_ind(equal_var=False) computes
    from the raw values, from the moments; the t distribution comes from scipy.special
    (scipy.stats would add some 70 MB to the worker).

    When neither side varies there is no standard error. If both sides hold the same one score,
    there is nothing to test: None (scipy: t and p NaN). If they hold different scores, the data
    leave no doubt about the difference: the effect with p = 0 and the interval [effect, effect],
    as scipy answers (t = +-inf)."""
    from scipy.special import stdtr, stdtrit

    var1, var2 = _variance(group), _variance(rest)
    se1, se2 = var1 / group.n, var2 / rest.n
    effect = group.total / group.n - rest.total / rest.n
    if se1 + se2 == 0:
        if group.total * rest.n == rest.total * group.n:  # the same mean, compared exactly
            return None
        return WelchTest(effect, (effect, effect), 0.0)
    se = math.sqrt(se1 + se2)
    df = (se1 + se2) ** 2 / (se1 * se1 / (group.n - 1) + se2 * se2 / (rest.n - 1))
    p_value = float(2 * stdtr(df, -abs(effect) / se))
    half = float(stdtrit(df, 0.975)) * se
    return WelchTest(effect, (effect - half, effect + half), min(1.0, p_value))


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), in the order given: the
    i-th smallest p times m / i, made non-decreasing from the largest down, at most 1 (what
    statsmodels' multipletests(method="fdr_bh") gives, without importing statsmodels and pandas)."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 1.0
    for rank, i in reversed(list(enumerate(sorted(range(m), key=p_values.__getitem__), start=1))):
        running = min(running, p_values[i] * m / rank)
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class LevelResult:
    """One level compared with the rest of the answers."""

    key: tuple[str, str]
    group: Moments
    rest: Moments
    status: str  # tested, too_few, no_variance
    test: WelchTest | None = None
    p_adjusted: float | None = None


def compare_levels(everyone: Moments, levels: dict[tuple[str, str], Moments], *, min_n: int) -> list[LevelResult]:
    """Each level against the rest of the answers, adjusted together; tested levels first by
    adjusted p-value (then raw p, then |effect|), the others by factor and level."""
    tested: list[LevelResult] = []
    untested: list[LevelResult] = []
    for key, group in sorted(levels.items()):
        rest = everyone - group
        if group.n < min_n or rest.n < min_n:
            untested.append(LevelResult(key, group, rest, "too_few"))
            continue
        test = welch_from_moments(group, rest)
        if test is None:
            untested.append(LevelResult(key, group, rest, "no_variance"))
            continue
        tested.append(LevelResult(key, group, rest, "tested", test))
    adjusted = benjamini_hochberg([r.test.p_value for r in tested if r.test is not None])
    answer = [dataclasses.replace(r, p_adjusted=p) for r, p in zip(tested, adjusted, strict=True)]
    answer.sort(key=lambda r: (r.p_adjusted, r.test.p_value, -abs(r.test.effect), r.key))  # type: ignore[union-attr]
    return answer + untested


def result_fields(r: LevelResult) -> dict[str, Any]:
    """What a report shows of a compared level (besides naming it)."""
    test = r.test
    return {
        "status": r.status,
        "n": r.group.n,
        "rest_n": r.rest.n,
        "score": stats.rounded(_mean(r.group)),
        "rest_score": stats.rounded(_mean(r.rest)),
        "effect": None if test is None else round(test.effect, 4),
        "ci95": None if test is None else Interval95(low=round(test.ci95[0], 4), high=round(test.ci95[1], 4)),
        "p_value": None if test is None else test.p_value,
        "p_adjusted": r.p_adjusted,
        "significant": r.p_adjusted is not None and r.p_adjusted < ALPHA,
    }


def factors_from_moments(everyone: Moments, levels: dict[tuple[str, str], Moments], *, min_n: int) -> list[DriverFactor]:
    """`compare_levels` as the key-driver report lists them."""
    return [
        DriverFactor(factor=r.key[0], level=r.key[1], **result_fields(r))  # type: ignore[arg-type]
        for r in compare_levels(everyone, levels, min_n=min_n)
    ]


async def driver_report(
    session: AsyncSession, metric: str, filters: ReportFilters, *, window_days: int, min_n: int
) -> DriverReport:
    await check_metric_survey(session, filters.survey_id, metric)
    found = await DriverRepository(session).driver_stats(metric, filters, window_days=window_days)
    return DriverReport(
        metric=metric,  # type: ignore[arg-type]
        definition=DEFINITIONS[metric],
        filters=Filters.of(filters),
        window_days=window_days,
        min_n=min_n,
        n=found.everyone.n,
        anonymous=found.anonymous,
        score=stats.rounded(_mean(found.everyone)),
        test="welch-t",
        adjustment="benjamini-hochberg",
        alpha=ALPHA,
        factors=factors_from_moments(found.everyone, found.levels, min_n=min_n),
    )
