"""/v1/analytics"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from cem.analytics import drivers, results, sentiment, service, themes
from cem.analytics.drivers import MIN_N
from cem.analytics.drivers_schemas import DriverReport
from cem.analytics.results_schemas import TEXTS_SHOWN, SurveyResults
from cem.analytics.schemas import Interval, JourneyReport, MetricReport, RecoveryReport, SuppressionReport, TouchpointReport
from cem.analytics.sentiment_schemas import SentimentReport
from cem.analytics.themes_schemas import ThemeReport
from cem.deps import SettingsDep
from cem.feedback.repository import FeedbackFilters
from cem.feedback.router import sentiment_report_filters
from cem.fields import From, To
from cem.journeys.router import JourneyId
from cem.report_filters import ReportFilters, TouchpointFilter, report_filters_query
from cem.surveys.questions import Metric
from cem.surveys.router import SurveyId
from cxkit.http.answers import ModelResponse, TypedRoute, json_response
from cxkit.http.auth import Reader
from cxkit.http.deps import SessionDep
from cxkit.http.pagination import Page, PageParams, page_params
from cxkit.http.problems import problem_responses
from cxkit.http.routing import GatedRouter

router = GatedRouter(prefix="/analytics", tags=["analytics"], route_class=TypedRoute)
# A survey's own report, beside the survey's routes.
survey_results_router = GatedRouter(prefix="/surveys", tags=["surveys"], route_class=TypedRoute)

IntervalParam = Annotated[
    Interval, Query(description="Bucket size of the series (UTC; weeks start on Monday).", examples=["week"])
]
# The filters of the reports on answers, and of the follow-ups' and suppressions' reports.
AnswerFilters = Annotated[
    ReportFilters, Depends(report_filters_query("Only answers to this survey (it must measure this metric)."))
]
FollowupFilters = Annotated[ReportFilters, Depends(report_filters_query("Only follow-ups of answers to this survey."))]
SuppressionFilters = Annotated[ReportFilters, Depends(report_filters_query("Only this survey's suppressions."))]

COMMON = (
    "Filter by `survey_id`, `touchpoint` and a window on the answer time (`from` inclusive, `to` exclusive). "
    "Skipped answers are left out of the denominator and counted in `skipped`. The response rate counts the "
    "invitations made in the window and how many were answered. `series` has one point per `interval` with "
    "its sample size and 95% confidence interval. Computed by the database. Needs `read`."
)


@router.get(
    "/nps",
    summary="Net Promoter Score",
    description="NPS = % promoters (9-10) - % detractors (0-6), -100 to 100; the interval uses the standard error "
    "of that difference (none below 2 answers). " + COMMON,
    responses=problem_responses(401, 403, 404, 422),
)
async def nps(
    session: SessionDep, _: Reader, filters: AnswerFilters, interval: IntervalParam = "week"
) -> ModelResponse[MetricReport]:
    return json_response(await service.metric_report(session, "nps", filters, interval=interval))


@router.get(
    "/csat",
    summary="Customer satisfaction (CSAT)",
    description="CSAT = % of answers 4-5 on the 1-5 scale, 0 to 100, with the Wilson score interval. " + COMMON,
    responses=problem_responses(401, 403, 404, 422),
)
async def csat(
    session: SessionDep, _: Reader, filters: AnswerFilters, interval: IntervalParam = "week"
) -> ModelResponse[MetricReport]:
    return json_response(await service.metric_report(session, "csat", filters, interval=interval))


@router.get(
    "/ces",
    summary="Customer effort score (CES)",
    description="CES = mean of the 1-7 effort scores (1 = very difficult, 7 = very easy), with mean +- 1.96 sd / "
    "sqrt(n) (none below 2 answers). " + COMMON,
    responses=problem_responses(401, 403, 404, 422),
)
async def ces(
    session: SessionDep, _: Reader, filters: AnswerFilters, interval: IntervalParam = "week"
) -> ModelResponse[MetricReport]:
    return json_response(await service.metric_report(session, "ces", filters, interval=interval))


@router.get(
    "/touchpoints",
    summary="Touchpoints against their targets",
    description="Per touchpoint (by key, paginated with `limit` and `cursor`): interactions, invitations, "
    "responses, response rate, NPS, CSAT and CES, and the gap between the score and the touchpoint's target "
    "(its brand promise). The window (`from`, `to`) applies to each count's own time. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def touchpoints(
    session: SessionDep, _: Reader, page: Annotated[PageParams, Depends(page_params)], since: From = None, until: To = None
) -> ModelResponse[Page[TouchpointReport]]:
    rows, next_cursor = await service.touchpoint_reports(session, page, since=since, until=until)
    return json_response(Page[TouchpointReport](items=rows, next_cursor=next_cursor))


@router.get(
    "/recovery",
    summary="Recovery of detractors (close the loop)",
    description="How many detractor answers raised a follow-up (`followup.requested`), how many of those the CRM "
    "reported done (the task was completed: `task.completed`), and how many of those customers answered better "
    "on their next answer to the same metric (NPS 7 or more, CSAT or CES 3 or more), with the rates, in all and "
    "per metric; and how fast: time to first action (the first call, email... with the customer, or the close), "
    "time to close (median and p90 hours) and the share closed within the SLA, in all (`timing`) and per "
    "`interval` of raising (`periods`). Filter by the detractor answer's `survey_id` and `touchpoint`, and a window on when the "
    "follow-up was raised (`from` inclusive, `to` exclusive). Computed by the database. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def recovery(
    session: SessionDep, _: Reader, settings: SettingsDep, filters: FollowupFilters, interval: IntervalParam = "week"
) -> ModelResponse[RecoveryReport]:
    report = await service.recovery_report(session, filters, interval=interval, action_types=settings.followup_action_types)
    return json_response(report)


@router.get(
    "/suppressions",
    summary="Suppressed invitations by reason",
    description="How many invitations the survey rules suppressed, per reason (opted_out, erased, survey_throttle, "
    "fatigue). Filter by `survey_id`, `touchpoint` and a window on when it happened (`from` inclusive, `to` "
    "exclusive). The suppressions themselves are listed at `/v1/suppressions`. `opt_outs` counts the recipients "
    "who opted out from a survey link with the same filters (listed at `/v1/opt-outs`). Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def suppressions(session: SessionDep, _: Reader, filters: SuppressionFilters) -> ModelResponse[SuppressionReport]:
    return json_response(await service.suppression_report(session, filters))


@router.get(
    "/themes",
    summary="What the comments talk about",
    description="The `limit` words the comments of scored answers mention most, as themes: PostgreSQL's text search "
    "splits each answer's comment (its first text answer) into words, drops the stop words and folds each word to "
    "its stem with the snowball dictionary of the survey's language (so `delivery` and `deliveries` are one theme), "
    "and an answer mentioning a theme several times counts once. That is done once, when the answer is recorded, "
    "and kept with its score (in the survey's language at that time); the report counts what is kept (about 0.3 s "
    "for 150,000 comments on 2 cores). Per theme: `n` answers mention it (`share` of the "
    "answers with a comment), their score against the other answers with a comment (`effect` in NPS points, CSAT "
    "percentage points or CES scale points) with its 95% interval, the p-value of Welch's t-test, and `p_adjusted` "
    "over the themes tested (Benjamini-Hochberg); themes with fewer than `min_n` answers on either side are listed "
    "with `status: too_few`. An association, not proof of cause. Filter by `survey_id`, `touchpoint` and a window "
    "on the answer time (`from` inclusive, `to` exclusive). Computed by the database. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def comment_themes(
    session: SessionDep,
    _: Reader,
    metric: Annotated[Metric, Query(description="The score the themes are compared on.", examples=["nps"])],
    filters: AnswerFilters,
    limit: Annotated[int, Query(ge=1, le=100, description="How many themes, the most mentioned first.")] = 20,
    min_n: Annotated[
        int, Query(ge=2, le=100_000, description="Fewest answers with and without a theme to test it.", examples=[MIN_N])
    ] = MIN_N,
) -> ModelResponse[ThemeReport]:
    return json_response(await themes.theme_report(session, metric, filters, limit=limit, min_n=min_n))


@router.get(
    "/sentiment",
    summary="How the feedback feels",
    description="The feedback (`/v1/feedback`) counted per sentiment label, with the net sentiment (% positive - % "
    "negative, -100 to 100, with the 95% interval of a difference of two shares of one sample, as for NPS) and the "
    "mean VADER compound score (-1 to 1, mean ± 1.96 sd/√n): in all, per `interval` of the time it was received "
    "(`series`, the buckets that have feedback), per touchpoint (`by_touchpoint`; feedback about none as a "
    "`touchpoint` of null) and per channel (`by_channel`), each list the `limit` with the most feedback first, "
    "with how many there are in all. The label and score are the ones each piece got when it was recorded. Filter as "
    "the feedback list does: `customer_id`, `touchpoint`, `channel` and a window on the time it was received (`from` "
    "inclusive, `to` exclusive). Feedback is given to no survey, so there is no `survey_id`. Counted by the "
    "database in one grouped query. Needs `read`.",
    responses=problem_responses(401, 403, 422),
)
async def feedback_sentiment(
    session: SessionDep,
    _: Reader,
    filters: Annotated[FeedbackFilters, Depends(sentiment_report_filters)],
    interval: IntervalParam = "week",
    limit: Annotated[
        int, Query(ge=1, le=200, description="How many touchpoints and channels to list, the most feedback first.")
    ] = 20,
) -> ModelResponse[SentimentReport]:
    return json_response(await sentiment.sentiment_report(session, filters, interval=interval, limit=limit))


@router.get(
    "/journeys/{journey_id}",
    summary="A journey, stage by stage",
    description="How customers move through a journey in a window on the interaction time (`from` inclusive, `to` "
    "exclusive): per stage, in the journey's order, the visits of its touchpoints (and how many of them anonymous), "
    "the known customers who visited it, how many of those visited the next stage at or after their first visit of "
    "this one (`reached_next`, `conversion_to_next`) and the median days it took them, and the NPS, CSAT and CES of "
    "the answers about its touchpoints in the window, with 95% intervals. `customers` counts those who visited any "
    "stage. Visits come from `cx.interactions.v1`. Computed by the database. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def journey_report(
    journey_id: JourneyId, session: SessionDep, _: Reader, since: From = None, until: To = None
) -> ModelResponse[JourneyReport]:
    return json_response(await service.journey_report(session, journey_id, since=since, until=until))


@router.get(
    "/drivers",
    summary="Key drivers of NPS, CSAT or CES",
    description="Which factors go with a higher or lower score. The answers (scored answers of known customers; "
    "anonymous ones are counted in `anonymous` and left out) are split, for each level of each factor, into those "
    "with the level and the rest: `touchpoint` (visited it in the `window_days` before answering), "
    "`interaction_type` (had one in that window), `journey_stage` (of the answered touchpoint), and from the CRM's "
    "customer projection as the CEM holds it now: `lifecycle_stage`, `open_deal_value` (band of the open deals' "
    "sum: none, under_1k, 1k_10k, 10k_100k, 100k_plus) and `tag`. Per level: `n`, the `effect` (score with the "
    "level minus score without it: NPS points from per-answer +100/0/-100, CSAT percentage points, CES scale "
    "points) with its 95% interval and p-value from Welch's t-test, and `p_adjusted`, corrected for multiple "
    "comparisons over all tested levels with Benjamini-Hochberg (`adjustment: benjamini-hochberg`); "
    "`significant` when `p_adjusted` < 0.05. Levels with fewer than `min_n` answers on either side are listed "
    "with `status: too_few` and no test. An association, not proof of cause. Filter by `survey_id`, "
    "`touchpoint` and a window on the answer time (`from` inclusive, `to` exclusive). Computed by the database "
    "in one grouped query. Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def key_drivers(
    session: SessionDep,
    _: Reader,
    metric: Annotated[Metric, Query(description="The score to explain.", examples=["nps"])],
    filters: AnswerFilters,
    window_days: Annotated[
        int,
        Query(ge=1, le=365, description="Days before each answer whose touchpoints and interactions count.", examples=[30]),
    ] = 30,
    min_n: Annotated[
        int, Query(ge=2, le=100_000, description="Fewest answers with and without a level to test it.", examples=[MIN_N])
    ] = MIN_N,
) -> ModelResponse[DriverReport]:
    return json_response(await drivers.driver_report(session, metric, filters, window_days=window_days, min_n=min_n))


@survey_results_router.get(
    "/{survey_id}/results",
    summary="A survey's results, question by question",
    description="What the survey's respondents answered, per question, in the survey's order: how many `answered` "
    "and `skipped` it; for a rating, every score of its scale with its count and share and the `mean`; for a single "
    "or multi choice, every option with its count and share (of a multi choice's answers, the share that picked it: "
    f"the shares add up to more than 1); for a text question, the {TEXTS_SHOWN} newest answers (all of them are in "
    "`GET /v1/responses/export`). An erased customer's text answers count as skipped. Filter by `touchpoint` "
    "and a window on the answer time (`from` inclusive, `to` exclusive). Counted by the database: whole UTC days "
    "from the answers it keeps counted per day, question and value as they are written, the parts of days a window "
    "cuts from the stored answers (milliseconds at a million answers). Needs `read`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def survey_results(
    survey_id: SurveyId,
    session: SessionDep,
    _: Reader,
    since: From = None,
    until: To = None,
    touchpoint: TouchpointFilter = None,
) -> ModelResponse[SurveyResults]:
    return json_response(await results.survey_results(session, ReportFilters(survey_id, touchpoint, since, until)))
