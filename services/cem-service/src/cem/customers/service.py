"""The customer projection: applying CRM snapshots, and the experience view."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cem.customers.models import CustomerProfile
from cem.customers.repository import CustomerProfileRepository
from cxkit.db import utcnow
from cxkit.events.payloads import CustomerSnapshot
from cxkit.http.problems import NotFound


def profile_row(snapshot: CustomerSnapshot) -> dict[str, Any]:
    return {
        "id": snapshot.id,
        "email": snapshot.email,
        "name": snapshot.name,
        "phone": snapshot.phone,
        "company": snapshot.company,
        "lifecycle_stage": snapshot.lifecycle_stage,
        "owner": snapshot.owner,
        "tags": list(snapshot.tags),
        "survey_opt_out": snapshot.survey_opt_out,
        "open_deal_value": snapshot.open_deal_value,
        "crm_version": snapshot.version,
        "crm_created_at": snapshot.created_at,
        "crm_updated_at": snapshot.updated_at,
        "synced_at": utcnow(),
    }


async def apply_customer_snapshots(session: AsyncSession, snapshots: list[CustomerSnapshot]) -> None:
    await CustomerProfileRepository(session).apply_snapshots([profile_row(s) for s in snapshots])


async def get_profile(session: AsyncSession, customer_id: uuid.UUID) -> CustomerProfile:
    profile = await CustomerProfileRepository(session).get(customer_id)
    if profile is None:
        raise NotFound(f"customer {customer_id} is not known here (yet): the CRM has not announced it")
    return profile
