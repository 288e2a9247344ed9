"""Every query on the customer projection."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from cem.customers.models import CustomerExperienceTotals, CustomerProfile, email_key
from cxkit.db import any_of, locking, session_connection
from cxkit.kept_figures import KeptFigures
from cxkit.pg_pool import UnnestInsert
from cxkit.repository import Repository, SessionRepository

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
PERSONAL_COLUMNS = ("email", "email_lower", "name", "phone", "company")


def _stub(customer_id: uuid.UUID, now: dt.datetime, **fields: Any) -> dict[str, Any]:
    """A profile row for a customer the CRM has not announced here (yet)."""
    return {
        "id": customer_id,
        "tags": [],
        "survey_opt_out": False,
        "open_deal_value": Decimal("0"),
        "crm_version": 0,
        "synced_at": now,
        **fields,
    }


_SNAPSHOT_ROWS = UnnestInsert(CustomerProfile.__table__, ["id", *SNAPSHOT_COLUMNS, "open_deal_value", "open_deal_value_at"])


def _snapshot_upsert(*, replaying: bool) -> str:
    """`apply_snapshots`' statement: the upsert of `_SNAPSHOT_ROWS`' columns, returning the
    addresses it made new to their profiles (every sub-statement of one statement reads the
    same snapshot, so `old` holds the rows as they were before the upsert)."""
    t = CustomerProfile.__tablename__
    newer_value = f"{t}.open_deal_value_at IS NULL OR EXCLUDED.open_deal_value_at >= {t}.open_deal_value_at"
    # A customer who opted out here stays opted out, whatever the CRM says (`opted_out_at`).
    own = {"survey_opt_out": f"EXCLUDED.survey_opt_out OR {t}.opted_out_at IS NOT NULL"}
    set_ = [f"{c} = {own.get(c, f'EXCLUDED.{c}')}" for c in SNAPSHOT_COLUMNS] + [
        f"{c} = CASE WHEN {newer_value} THEN EXCLUDED.{c} ELSE {t}.{c} END" for c in ("open_deal_value", "open_deal_value_at")
    ]
    newer = f"{t}.crm_version {'<=' if replaying else '<'} EXCLUDED.crm_version"
    upsert = UnnestInsert(
        CustomerProfile.__table__,
        _SNAPSHOT_ROWS.columns,
        on_conflict=f"(id) DO UPDATE SET {', '.join(set_)} WHERE {newer} AND {t}.erased_at IS NULL AND {t}.merged_into IS NULL",
    )
    return (
        f"WITH old AS (SELECT id, email_lower FROM {t} WHERE id = ANY($1::uuid[])), "
        f"up AS ({upsert.sql} RETURNING id, email_lower) "
        "SELECT DISTINCT up.email_lower FROM up LEFT JOIN old ON old.id = up.id "
        "WHERE up.email_lower IS NOT NULL AND up.email_lower IS DISTINCT FROM old.email_lower"
    )


_SNAPSHOT_UPSERTS = {replaying: _snapshot_upsert(replaying=replaying) for replaying in (False, True)}


class CustomerProfileRepository(Repository[CustomerProfile]):
    model = CustomerProfile

    async def get_by_email(self, email: str) -> CustomerProfile | None:
        """The customer with this email (case-insensitive); the most recently updated one if several."""
        key = email_key(email)
        found = await self.by_emails([key])
        return found.get(key)

    async def by_ids(self, ids: Collection[uuid.UUID], *, hold: bool = False) -> dict[uuid.UUID, CustomerProfile]:
        """The profiles with these ids; with `hold`, each locked as `hold` says."""
        if not ids:
            return {}
        stmt = select(CustomerProfile).where(CustomerProfile.id.in_(set(ids)))
        rows = await self.session.scalars(_held(stmt.order_by(CustomerProfile.id)) if hold else stmt)
        return {p.id: p for p in rows.all()}

    async def hold(self, customer_id: uuid.UUID) -> CustomerProfile | None:
        """The profile, for a write about this customer (feedback, an invitation, an answer, an
        interaction): locked FOR KEY SHARE until the transaction ends and read as it is once the
        lock is held. A merge or an erasure locks it FOR UPDATE (`lock`) before it changes the
        customer's rows: one that began first is waited for, and the write sees its result (the
        customer erased, or merged into a survivor); one that comes later waits for the write,
        and then reaches its rows. Writes do not hold each other up."""
        return await self.session.scalar(_held(select(CustomerProfile).where(CustomerProfile.id == customer_id)))

    async def hold_survivor(self, profile: CustomerProfile | None) -> CustomerProfile | None:
        """The customer a write about `profile` goes to: the profile, or the survivor it was merged
        into, held (`hold`). Merges keep pointers flat; a chain is followed all the same."""
        seen: set[uuid.UUID] = set()
        while profile is not None and profile.merged_into is not None and profile.id not in seen:
            seen.add(profile.id)
            profile = await self.hold(profile.merged_into)
        return profile

    async def lock(self, customer_id: uuid.UUID) -> CustomerProfile | None:
        """The profile locked FOR UPDATE, read as it is once the lock is held: what a merge (of
        the duplicate) or an erasure takes before it changes the customer's rows (see `hold`)."""
        stmt = (
            select(CustomerProfile)
            .where(CustomerProfile.id == customer_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return await self.session.scalar(stmt)

    async def by_emails(self, emails_lower: Collection[str], *, hold: bool = False) -> dict[str, CustomerProfile]:
        """`email_key` -> the customer announced with it (the most recently updated one if
        several); merged duplicates and erased customers have no email here. With `hold`, the
        profiles found are locked as `hold` says (one erased or merged meanwhile is found no more)."""
        if not emails_lower:
            return {}
        stmt = (
            select(CustomerProfile)
            .where(any_of(CustomerProfile.email_lower, set(emails_lower)))
            .order_by(CustomerProfile.crm_updated_at.desc().nulls_last(), CustomerProfile.id)
        )
        if hold:
            stmt = _held(stmt)
        found: dict[str, CustomerProfile] = {}
        for profile in (await self.session.scalars(stmt)).all():
            assert profile.email_lower is not None
            found.setdefault(profile.email_lower, profile)
        return found

    async def apply_snapshots(self, rows: list[dict[str, Any]], *, replaying: bool = False) -> set[str]:
        """Upsert many snapshots in one statement. An older version never overwrites a newer one
        (a replay re-applies the same version too, restoring a damaged copy), nor does any
        snapshot change a merged duplicate or bring an erased customer's data back. The open
        deal value moves only forward in CRM time (deal events set it too).

        Returns the lower-cased addresses the statement gave profiles that did not have them
        before (a new customer's, or a changed one): only under those can rows be waiting to be
        linked (see `apply_customer_snapshots`)."""
        if not rows:
            return set()
        # One statement cannot touch the same row twice: keep each customer's newest snapshot.
        newest: dict[Any, dict[str, Any]] = {}
        for row in rows:
            seen = newest.get(row["id"])
            if seen is None or row["crm_version"] >= seen["crm_version"]:
                newest[row["id"]] = row
        columns = _SNAPSHOT_ROWS.column_lists(list(newest.values()))
        tags = _SNAPSHOT_ROWS.columns.index("tags")
        columns[tags] = [orjson.dumps(value).decode() for value in columns[tags]]  # JSON travels as text
        conn = await session_connection(self.session)
        return {r[0] for r in await conn.fetch(_SNAPSHOT_UPSERTS[replaying], *columns)}

    async def survivor_of(self, customer_id: uuid.UUID) -> uuid.UUID:
        """Who a merge into `customer_id` lands on: the customer, or the survivor it was itself
        merged into (a merge of the survivor applied first: customer.merged is keyed by the
        survivor, so a chain's events come in any order). Each profile read is held (`hold`), so a
        merge of it under way is waited for and seen."""
        seen: set[uuid.UUID] = set()
        current = customer_id
        while current not in seen:
            seen.add(current)
            stmt = _held(select(CustomerProfile.merged_into).where(CustomerProfile.id == current))
            merged_into = await self.session.scalar(stmt)
            if merged_into is None:
                return current
            current = merged_into
        return current

    async def mark_merged(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID, now: dt.datetime) -> None:
        """The duplicate becomes a pointer to the survivor; its email no longer finds anyone. A
        duplicate that opted out here hands its opt-out to the survivor. The survivor is one no
        merge has made a pointer (`survivor_of`), so pointers stay flat: readers follow one hop."""
        opted_out_at = await self.session.scalar(select(CustomerProfile.opted_out_at).where(CustomerProfile.id == duplicate_id))
        if opted_out_at is not None:
            await self.session.execute(
                update(CustomerProfile)
                .where(CustomerProfile.id == survivor_id, CustomerProfile.opted_out_at.is_(None))
                .values(survey_opt_out=True, opted_out_at=opted_out_at)
                .execution_options(synchronize_session=False)
            )
        table = CustomerProfile.__table__
        stmt = insert(table).values(_stub(duplicate_id, now, merged_into=survivor_id))
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=["id"],
                set_={"merged_into": stmt.excluded.merged_into, "email_lower": None, "synced_at": stmt.excluded.synced_at},
            )
        )
        # Customers merged into the duplicate earlier now point at the survivor directly.
        await self.session.execute(
            update(CustomerProfile).where(CustomerProfile.merged_into == duplicate_id).values(merged_into=survivor_id)
        )

    async def record_merged_addresses(self, rows: list[dict[str, Any]], *, replaying: bool = False) -> set[str]:
        """Snapshots (`profile_row`s) of merged duplicates, which `apply_snapshots` leaves alone:
        each one newer than what the pointer holds records its address on it (`email`, as a merge
        leaves it), so that the duplicate's erasure finds it; a merge applied before the
        duplicate's customer.created made a pointer without one. Its `email_lower` is set too, for
        `announced_customer_with` to lead what was kept under the address to the survivor, until
        `drop_merged_address_keys` takes it away again. Returns the keys recorded."""
        newest: dict[uuid.UUID, dict[str, Any]] = {}
        for row in rows:
            if row["email_lower"] and (row["id"] not in newest or row["crm_version"] >= newest[row["id"]]["crm_version"]):
                newest[row["id"]] = row
        recorded: set[str] = set()
        for row in newest.values():
            version = CustomerProfile.crm_version
            newer = version <= row["crm_version"] if replaying else version < row["crm_version"]
            result = await self.session.execute(
                update(CustomerProfile)
                .where(
                    CustomerProfile.id == row["id"],
                    CustomerProfile.merged_into.is_not(None),
                    CustomerProfile.erased_at.is_(None),
                    newer,
                )
                .values(
                    email=row["email"], email_lower=row["email_lower"], crm_version=row["crm_version"], synced_at=row["synced_at"]
                )
                .returning(CustomerProfile.id)
                .execution_options(synchronize_session=False)
            )
            if result.first() is not None:
                recorded.add(row["email_lower"])
        return recorded

    async def drop_merged_address_keys(self, emails_lower: Collection[str]) -> None:
        """Merged duplicates find nobody by their address (see `record_merged_addresses`)."""
        if emails_lower:
            await self.session.execute(
                update(CustomerProfile)
                .where(CustomerProfile.merged_into.is_not(None), any_of(CustomerProfile.email_lower, set(emails_lower)))
                .values(email_lower=None)
                .execution_options(synchronize_session=False)
            )

    async def erase(self, customer_id: uuid.UUID, erased_at: dt.datetime, now: dt.datetime) -> None:
        """Keep the id and anonymous fields, drop the personal ones; the first erasure time stays."""
        table = CustomerProfile.__table__
        stmt = insert(table).values(_stub(customer_id, now, erased_at=erased_at))
        set_: dict[str, Any] = dict.fromkeys(PERSONAL_COLUMNS)
        set_["tags"] = stmt.excluded.tags
        set_["erased_at"] = case((table.c.erased_at.is_(None), stmt.excluded.erased_at), else_=table.c.erased_at)
        set_["synced_at"] = stmt.excluded.synced_at
        await self.session.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=set_))

    async def mark_opted_out(self, customer_id: uuid.UUID, at: dt.datetime | None) -> bool:
        """The customer asked here for no more surveys at `at`, or (None) for surveys again;
        False when that was so already."""
        was = CustomerProfile.opted_out_at.is_(None) if at is not None else CustomerProfile.opted_out_at.is_not(None)
        result = await self.session.execute(
            update(CustomerProfile)
            .where(CustomerProfile.id == customer_id, was)
            .values(survey_opt_out=at is not None, opted_out_at=at)
            .returning(CustomerProfile.id)
            .execution_options(synchronize_session=False)
        )
        return result.first() is not None

    async def set_open_deal_value(self, customer_id: uuid.UUID, value: Decimal, at: dt.datetime, now: dt.datetime) -> None:
        """The customer's open deal value as of CRM time `at`, unless a later one is known."""
        await self.session.execute(
            update(CustomerProfile)
            .where(
                CustomerProfile.id == customer_id,
                or_(CustomerProfile.open_deal_value_at.is_(None), CustomerProfile.open_deal_value_at < at),
            )
            .values(open_deal_value=value, open_deal_value_at=at, synced_at=now)
        )

    async def record_conversion(
        self, customer_id: uuid.UUID, lead_id: uuid.UUID, deal_id: uuid.UUID | None, at: dt.datetime, now: dt.datetime
    ) -> None:
        """The lead the customer was converted from; the latest conversion wins."""
        await self.session.execute(
            update(CustomerProfile)
            .where(
                CustomerProfile.id == customer_id,
                or_(CustomerProfile.converted_at.is_(None), CustomerProfile.converted_at <= at),
            )
            .values(converted_lead_id=lead_id, converted_deal_id=deal_id, converted_at=at, synced_at=now)
        )

    async def reset_deal_value_times(self) -> None:
        """Before a replay: deal events and snapshots set the open deal value again, in CRM-time
        order. Nothing else is cleared: replayed snapshots of the same version apply again, so a
        damaged copy is restored and an event the replay does not reach leaves the copy as it was."""
        await self.session.execute(
            update(CustomerProfile)
            .where(CustomerProfile.erased_at.is_(None), CustomerProfile.merged_into.is_(None))
            .values(open_deal_value_at=None)
        )


def announced_customer_with(email_lower: Any) -> Any:
    """A correlated subquery: the id of the live customer announced with this email key (a stored
    `email_lower` column, never a lower() of an address in SQL: see `email_key`), for linking rows
    that were kept under an email until the CRM announced its owner. A merged duplicate has no
    key, except while the snapshot that records its address links what was kept under it
    (`record_merged_addresses`): then the key leads to its survivor (a live customer with the
    same key first)."""
    return (
        select(func.coalesce(CustomerProfile.merged_into, CustomerProfile.id))
        .where(CustomerProfile.email_lower == email_lower, CustomerProfile.erased_at.is_(None))
        .order_by(
            CustomerProfile.merged_into.is_not(None),
            CustomerProfile.crm_updated_at.desc().nulls_last(),
            CustomerProfile.id,
        )
        .limit(1)
        .scalar_subquery()
    )


def _held(stmt: Any) -> Any:
    """`stmt` locking the profiles it reads FOR KEY SHARE, read as they are once locked (see
    `CustomerProfileRepository.hold`)."""
    return locking(stmt, "key share").execution_options(populate_existing=True)


# Every figure of `customer_experience_totals`, in table order.
TOTALS_COLUMNS = [c.name for c in CustomerExperienceTotals.__table__.columns if c.name != "customer_id"]
EXPERIENCE_TOTALS = KeptFigures(
    "customer_experience_totals", "experience_totals_from_rows", ("customer_id",), tuple(TOTALS_COLUMNS)
)


class ExperienceTotalsRepository(SessionRepository):
    """The per-customer figures the experience view's summary shows. The database keeps them
    (triggers of migration cem0004); `experience_totals_from_rows` is the same figures computed
    from the rows, for rebuilding and checking them."""

    async def differing_from_rows(self) -> int:
        """How many customers' kept figures differ from their rows (a missing row is all zero)."""
        return await EXPERIENCE_TOTALS.differing_from_rows(self.session)

    async def rebuild(self) -> tuple[int, int]:
        """Recompute every customer's figures from the rows (`KeptFigures.rebuild`). Returns
        (customers with figures, customers whose kept figures were wrong)."""
        return await EXPERIENCE_TOTALS.rebuild(self.session)
