"""`GET /dashboard`: a pipeline's funnel (conversion, time in stage), win rate and weighted
forecast by expected close month, with the customers' experience beside it, for people signed in with an API key."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from crm.dashboard.service import build_dashboard
from crm.funnel.schemas import Forecast, Funnel
from cxkit.dashboard.charts import Bar
from cxkit.dashboard.pages import DashboardUser, dashboard_templates, render_page
from cxkit.http.deps import SessionDep
from cxkit.http.problems import NotFound

router = APIRouter(include_in_schema=False)
TEMPLATES = dashboard_templates(Path(__file__).parent / "templates")


def funnel_bars(funnel: Funnel) -> list[Bar]:
    """Deals that reached each open stage (or a later one), then won."""
    bars = [
        Bar(s.name, s.reached, note=f"{s.conversion_to_next:.0%} went on" if s.conversion_to_next is not None else "")
        for s in funnel.stages
    ]
    return [*bars, Bar("Won", funnel.won.count)]


def days_bars(funnel: Funnel) -> list[Bar]:
    return [Bar(s.name, s.avg_days_in_stage) for s in funnel.stages]


def forecast_bars(forecast: Forecast) -> list[Bar]:
    """Per month, the weighted amount of the open deals expected to close in it."""
    return [
        Bar(p.start.strftime("%b %Y"), float(p.expected.weighted_amount), note=f"{p.expected.count} deals")
        for p in forecast.periods
    ]


@router.get("/dashboard")
async def crm_dashboard(request: Request, session: SessionDep, user: DashboardUser) -> HTMLResponse:
    errors = []
    status = 200
    pipeline_id = None
    if raw := request.query_params.get("pipeline_id", "").strip():
        try:
            pipeline_id = uuid.UUID(raw)
        except ValueError:
            errors.append("The pipeline is not a valid id: choose one from the list.")
            status = 422
    try:
        data = await build_dashboard(session, pipeline_id)
    except NotFound as exc:
        errors.append(str(exc.detail))
        status = exc.status
        data = await build_dashboard(session, None)
    await session.commit()  # the built-in default pipeline may just have been created
    return render_page(
        request,
        TEMPLATES,
        "crm_dashboard.html",
        status=status,
        user=user,
        data=data,
        errors=errors,
        funnel_bars=funnel_bars,
        days_bars=days_bars,
        forecast_bars=forecast_bars,
        base_url=str(request.base_url).rstrip("/"),
    )
