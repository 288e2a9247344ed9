"""What the CRM dashboard shows: the funnel of a pipeline and its forecast for the next six
months through the same functions `GET /v1/funnel` and `GET /v1/forecast` call (so the page and
the API agree), the pipelines to choose from, and the customers' experience as the CRM holds it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from crm.dashboard.repository import ExperienceOverview, experience_overview
from crm.funnel.repository import FunnelScope
from crm.funnel.schemas import Forecast, Funnel
from crm.funnel.service import build_forecast, build_funnel
from crm.pipelines.models import Pipeline
from crm.pipelines.service import get_pipeline, list_pipelines, resolve_pipeline
from cxkit.http.pagination import PageParams

PIPELINE_CHOICES = 200
FORECAST_MONTHS = 6


@dataclass
class CrmDashboard:
    pipelines: list[Pipeline]
    funnel: Funnel
    forecast: Forecast
    experience: ExperienceOverview

    @property
    def empty(self) -> bool:
        """No deal in this pipeline, open or closed: the page explains how to add one."""
        return not (self.funnel.open.count or self.funnel.won.count or self.funnel.lost.count)


async def build_dashboard(session: AsyncSession, pipeline_id: uuid.UUID | None) -> CrmDashboard:
    """Raises NotFound for an unknown pipeline, for the page to show."""
    if pipeline_id is None:
        pipeline, stages = await resolve_pipeline(session, None)
    else:
        pipeline, stages = await get_pipeline(session, pipeline_id)
    listed, _ = await list_pipelines(session, PageParams(limit=PIPELINE_CHOICES, cursor=None))
    scope = FunnelScope(pipeline.id)
    funnel = await build_funnel(session, pipeline, stages, scope)
    forecast = await build_forecast(session, pipeline, stages, scope, interval="month", since=None, periods=FORECAST_MONTHS)
    return CrmDashboard(
        pipelines=[p for p, _ in listed], funnel=funnel, forecast=forecast, experience=await experience_overview(session)
    )
