"""Every query on the customer projection."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cem.customers.models import CustomerProfile
from cxkit.db import upsert

SNAPSHOT_COLUMNS = [
    "email",
    "email_lower",
    "name",
    "phone",
    "company",
    "lifecycle_stage",
    "owner",
    "tags",
    "survey_opt_out",
    "crm_version",
    "crm_created_at",
    "crm_updated_at",
    "synced_at",
]


class CustomerProfileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, customer_id: uuid.UUID) -> CustomerProfile | None:
        return await self.session.get(CustomerProfile, customer_id)

    async def get_by_email(self, email: str) -> CustomerProfile | None:
        """The customer with this email (case-insensitive); the most recently updated one if several."""
        stmt = (
            select(CustomerProfile)
            .where(CustomerProfile.email_lower == email.strip().lower())
            .order_by(CustomerProfile.crm_updated_at.desc().nulls_last(), CustomerProfile.id)
            .limit(1)
        )
        return await self.session.scalar(stmt)

    async def apply_snapshots(self, rows: list[dict[str, Any]]) -> None:
        """Upsert many snapshots in one statement; an older version never overwrites a newer one."""
        if not rows:
            return
        # One statement cannot touch the same row twice: keep each customer's newest snapshot.
        newest: dict[Any, dict[str, Any]] = {}
        for row in rows:
            seen = newest.get(row["id"])
            if seen is None or row["crm_version"] >= seen["crm_version"]:
                newest[row["id"]] = row
        stmt = upsert(
            self.session,
            CustomerProfile.__table__,
            list(newest.values()),
            index_elements=["id"],
            update_columns=SNAPSHOT_COLUMNS,
            only_if_newer="crm_version",
        )
        await self.session.execute(stmt)
