"""Every customer query."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import orjson
from sqlalchemy import ColumnElement, DateTime, Uuid, bindparam, case, cast, func, literal, or_, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from crm.customers.lifecycle import OpenDealValue
from crm.customers.models import SEARCH_SEPARATOR, ChangeVia, Customer, CustomerChange, normalized_email, search_text
from cxkit import keyset
from cxkit.db import insert_new, locking
from cxkit.http.data_export import Section
from cxkit.http.pagination import PageParams
from cxkit.pg_pool import CompiledQuery, Guard, UnnestInsert
from cxkit.repository import Repository

# For a rare search term, the plans left: the trigram index (no walk of an index in the
# list's order, no scan of the whole table). Set (transaction-local) for that one statement
# and set back after it.
_PLANS = "SELECT set_config('enable_indexscan', '{setting}', true), set_config('enable_seqscan', '{setting}', true)"


# Who makes the customer changes of this transaction and how: read by the trigger that writes
# the customer's history (migration crm0016); transaction-local, so a pooled connection keeps
# nothing of it.
def _set_author(by: str, via: str) -> str:
    """The two settings, given the statement's placeholders for the author and the way."""
    return f"set_config('crm.changed_by', {by}, true), set_config('crm.change_via', {via}, true)"


_AUTHOR = f"SELECT {_set_author('$1', '$2')}"
_AUTHOR_IN_SESSION = text(f"SELECT {_set_author(':by', ':via')}")
# A data export's own sections: the record and the duplicates merged into it (their personal
# data too), then the field history of all of them.
EXPORT_SECTIONS = (
    Section("customers", "SELECT * FROM customers WHERE id = $1 OR merged_into_id = $1 ORDER BY created_at, id"),
    Section(
        "customer_changes",
        "SELECT * FROM customer_changes WHERE customer_id IN "
        "(SELECT id FROM customers WHERE id = $1 OR merged_into_id = $1) ORDER BY seq",
    ),
)
HISTORY_ORDER = keyset.Sort(keyset.SortKey("seq", CustomerChange.seq, "int", unique=True), descending=True)

SORT_KEYS = (
    keyset.SortKey("created_at", Customer.created_at, "datetime"),
    keyset.SortKey("updated_at", Customer.updated_at, "datetime"),
    keyset.SortKey("name", Customer.name, "str", nullable=True),
    keyset.SortKey("email", Customer.email_normalized, "str", nullable=True),
)


@dataclass(frozen=True, slots=True)
class EventTarget:
    """The live record an event about a customer id lands on (the survivor for a merged
    duplicate), whether it was erased, and its owner."""

    customer_id: uuid.UUID
    erased: bool
    owner: str | None


@dataclass(frozen=True, slots=True)
class CustomerFilters:
    q: str | None = None
    lifecycle_stage: str | None = None
    tag: str | None = None
    owner: str | None = None
    campaign_id: uuid.UUID | None = None
    external_id: str | None = None
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None
    updated_from: dt.datetime | None = None
    updated_to: dt.datetime | None = None
    include_removed: bool = False  # merged duplicates and erased customers too


def _like_pattern(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _search(columns: tuple[Any, Any, Any], q: str) -> ColumnElement[bool]:
    """`q` in the name, email or company (of the customers table or a subquery of its columns).
    Asked of the three joined by SEARCH_SEPARATOR, the value of the trigram index: a term
    without the separator lies within one of them. A term with it (a newline) could span two,
    so it is asked of each (without the index, as such a term hardly ever comes)."""
    name, email, company = columns
    pattern = _like_pattern(q)
    if SEARCH_SEPARATOR in q:
        return or_(name.ilike(pattern, escape="\\"), email.ilike(pattern, escape="\\"), company.ilike(pattern, escape="\\"))
    return search_text(name, email, company).ilike(pattern, escape="\\")


# How a search decides between walking the sort's index and asking the trigram index (see
# `CustomerRepository.list_page`): a term PostgreSQL estimates to match at least
# `SEARCH_PROBE_FROM` customers is looked for in the first `SEARCH_PROBE_ROWS` rows the page
# would walk, and is rare when fewer than `SEARCH_PROBE_MATCHES` of them hold it. The estimate
# is planned per column, from the statistics of name, email and company themselves (their most
# common values included), not from the histogram of the joined value.
SEARCH_PROBE_FROM = 500
SEARCH_PROBE_ROWS = 1000
SEARCH_PROBE_MATCHES = 5
_ESTIMATE = text(
    "EXPLAIN (FORMAT JSON) SELECT 1 FROM customers WHERE name ILIKE :pattern ESCAPE '\\' "
    "OR email_normalized LIKE :lower ESCAPE '\\' OR company ILIKE :pattern ESCAPE '\\'"
)


def _tag_condition(tag: str) -> ColumnElement[bool]:
    # JSONB containment: answered by the GIN index on tags.
    return Customer.tags.op("@>")(cast(literal(orjson.dumps([tag]).decode()), JSONB))


def matching(filters: CustomerFilters) -> list[ColumnElement[bool]]:
    """The WHERE of the customers a list (or an export) with these filters shows: live ones only,
    merged duplicates and erased customers left out unless `include_removed`."""
    conditions = [] if filters.include_removed else [Customer.merged_into_id.is_(None), Customer.erased_at.is_(None)]
    if filters.q:
        conditions.append(_search((Customer.name, Customer.email_normalized, Customer.company), filters.q))
    if filters.lifecycle_stage:
        conditions.append(Customer.lifecycle_stage == filters.lifecycle_stage)
    if filters.owner:
        conditions.append(Customer.owner == filters.owner)
    if filters.campaign_id:
        conditions.append(Customer.campaign_id == filters.campaign_id)
    if filters.tag:
        conditions.append(_tag_condition(filters.tag))
    if filters.external_id:
        conditions.append(Customer.external_id == filters.external_id)
    for column, since, until in (
        (Customer.created_at, filters.created_from, filters.created_to),
        (Customer.updated_at, filters.updated_from, filters.updated_to),
    ):
        if since is not None:
            conditions.append(column >= since)
        if until is not None:
            conditions.append(column < until)
    return conditions


class CustomerRepository(Repository[Customer]):
    model = Customer

    async def get(self, id: uuid.UUID, *, for_update: bool = False) -> Customer | None:
        if for_update:
            # The locked read refreshes the row in the session: pending changes go out first.
            await self.session.flush()
        return await super().get(id, for_update=for_update)

    async def lock_for_reference(self, id: uuid.UUID) -> None:
        """Read the customer a new row of this transaction is about to reference (a deal, a task,
        a document, a membership: `service.resolve_reference`), and its survivor if it was
        merged, each locked `FOR KEY SHARE` until the transaction ends and refreshed in the
        session, so `get` then answers them with no query. That lock is the one the new row's
        foreign key check takes anyway; an erase or a merge locks the row `FOR UPDATE`, so it
        either committed first and is read as done (READ COMMITTED reads the row again once the
        lock is granted), or waits for this transaction and then finds the new row to erase or
        move. Two writes naming one customer do not wait for each other; one that goes on to
        change the customer takes `lock_for_change`, which a shared lock does not hold up. As
        many reads as an unlocked reference costs: one, or two."""
        await self.session.flush()  # the locked reads refresh rows in the session: pending changes go out first
        while True:
            customer = await self._locked(id, key_share=True)
            if customer is None or customer.merged_into_id is None:
                return
            survivor = await self._locked(customer.merged_into_id, key_share=True)
            if survivor is None or survivor.merged_into_id is None:
                return
            # The survivor was merged meanwhile: the duplicate now points past it (merges are one hop).

    async def lock_key_share(self, id: uuid.UUID) -> Customer | None:
        """The customer (merged or not) locked `FOR KEY SHARE` until the transaction ends,
        refreshed in the session: an erase or a merge of it waits for this transaction."""
        await self.session.flush()  # the locked read refreshes the row in the session: pending changes go out first
        return await self._locked(id, key_share=True)

    async def lock_for_change(self, id: uuid.UUID) -> Customer | None:
        """The customer locked `FOR NO KEY UPDATE` until the transaction ends, refreshed in the
        session: for a change of its fields that leaves its keys (email, external id) alone, such
        as a lifecycle move or a new open deal value. It waits for an erase, a merge or another
        such change (they lock it too) but not for a write that only references it
        (`lock_for_reference`): a transaction holding that shared lock takes this one without
        waiting for the others holding it, so two of them cannot deadlock on the way up, as two
        asking `FOR UPDATE` would."""
        await self.session.flush()  # the locked read refreshes the row in the session: pending changes go out first
        return await self._locked(id, key_share=False)

    async def _locked(self, id: uuid.UUID, *, key_share: bool) -> Customer | None:
        stmt = locking(select(Customer).filter_by(id=id), "key share" if key_share else "no key update")
        stmt = stmt.execution_options(populate_existing=True)
        return await self.session.scalar(stmt)

    async def get_by_email(self, email: str) -> Customer | None:
        return await self.session.scalar(select(Customer).where(Customer.email_normalized == normalized_email(email)))

    async def id_by_external_id(self, external_id: str) -> uuid.UUID | None:
        return await self.session.scalar(select(Customer.id).where(Customer.external_id == external_id))

    async def by_emails(self, normalized: list[str]) -> dict[str, tuple[uuid.UUID, uuid.UUID | None]]:
        """email -> (id, merged_into_id) for the emails that have a customer; one query."""
        if not normalized:
            return {}
        rows = await self.session.execute(
            select(Customer.email_normalized, Customer.id, Customer.merged_into_id).where(
                Customer.email_normalized.in_(normalized)
            )
        )
        return {email: (cid, merged) for email, cid, merged in rows}

    async def by_ids(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID | None]:
        """id -> merged_into_id for the ids that exist; one query."""
        if not ids:
            return {}
        rows = await self.session.execute(select(Customer.id, Customer.merged_into_id).where(Customer.id.in_(ids)))
        return {cid: merged for cid, merged in rows}

    async def event_targets(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, EventTarget]:
        """id -> where its events go, for the ids that exist: one statement (merges are one hop),
        or another when a merge committed while it waited. Each customer named and each survivor
        is locked `FOR KEY SHARE` (in id order) until the transaction ends, the lock the rows
        written for them take anyway: an erase or a merge holding one `FOR UPDATE` is waited for
        and its outcome read (READ COMMITTED reads a row again once its lock is granted), so the
        rows go to the survivor, or keep nothing of an erased customer's words; one that comes
        after waits for them, and then moves or erases them."""
        if not ids:
            return {}
        named = aliased(Customer)
        survivors = select(named.merged_into_id).where(named.id.in_(ids), named.merged_into_id.is_not(None))
        stmt = locking(
            select(Customer.id, Customer.merged_into_id, Customer.erased_at, Customer.owner)
            .where(or_(Customer.id.in_(ids), Customer.id.in_(survivors)))
            .order_by(Customer.id),
            "key share",
        )
        while True:
            locked = {row.id: row for row in await self.session.execute(stmt)}
            targets: dict[uuid.UUID, EventTarget] = {}
            for cid in ids:
                row = locked.get(cid)
                if row is not None and row.merged_into_id is not None:
                    row = locked.get(row.merged_into_id)
                    if row is None or row.merged_into_id is not None:
                        break  # merged (or its survivor merged on) while this waited: read again
                if row is not None:
                    targets[cid] = EventTarget(customer_id=row.id, erased=row.erased_at is not None, owner=row.owner)
            else:
                return targets

    async def list_page(self, filters: CustomerFilters, sort: keyset.Sort, page: PageParams) -> list[Customer]:
        stmt = select(Customer).where(*matching(filters))
        if not filters.q:
            return await keyset.fetch(self.scalars_of, stmt, sort, Customer.id, page)
        # A search is planned for its own term. The driver prepares statements, and after a
        # few runs PostgreSQL may switch to a generic plan, which cannot know that '%zq%'
        # matches nothing and walks the sort index over every row (~0.8 s at 200k) instead
        # of asking the trigram index (milliseconds).
        await self.session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        # Even planned for its term, a search could walk the whole sort index: PostgreSQL
        # estimates what `ILIKE '%term%'` matches from a sample of the rows, and a rare name
        # the sample happened to hold looks a hundred times commoner than it is ('Abernathy':
        # 3,370 estimated, 5 found among 600,000; the walk took 1.2 s, the trigram indexes
        # 0.5 ms). A term estimated common is looked for among the rows the walk would take
        # first, and one found rare there is taken from the trigram index. A term estimated
        # rare is left to its plan, which asks the trigram index.
        if await self.search_estimate(filters.q) < SEARCH_PROBE_FROM or not await self.search_term_is_rare(filters, sort, page):
            return await keyset.fetch(self.scalars_of, stmt, sort, Customer.id, page)
        await self.session.execute(text(_PLANS.format(setting="off")))
        try:
            return await keyset.fetch(self.scalars_of, stmt, sort, Customer.id, page)
        finally:
            await self.session.execute(text(_PLANS.format(setting="on")))

    async def search_estimate(self, q: str) -> float:
        """How many customers PostgreSQL expects `q` to match (planning only: no row is read)."""
        pattern = _like_pattern(q)
        plan = await self.session.scalar(_ESTIMATE, {"pattern": pattern, "lower": pattern.lower()})
        return float((orjson.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"])

    async def search_term_is_rare(self, filters: CustomerFilters, sort: keyset.Sort, page: PageParams) -> bool:
        """Whether fewer than `SEARCH_PROBE_MATCHES` of the first `SEARCH_PROBE_ROWS` rows the
        page would walk (the other filters met, after its cursor, in its order) hold the term.
        If so, it matches under 0.5% of the customers (a page's walk could pass most of them);
        if not, the walk finds a page within about ten thousand rows. Counting takes one
        indexed walk of at most those rows, stopped as soon as enough are found."""
        assert filters.q
        newest = keyset.first_statement(  # the rows `keyset.fetch` walks first
            select(Customer.name, Customer.email_normalized, Customer.company).where(*matching(replace(filters, q=None))),
            sort,
            Customer.id,
            keyset.decode_after(sort, page),
            SEARCH_PROBE_ROWS - 1,  # one row more than that
        ).subquery()
        found = (
            select(literal(1))
            .select_from(newest)
            .where(_search((newest.c.name, newest.c.email_normalized, newest.c.company), filters.q))
            .limit(SEARCH_PROBE_MATCHES)
            .subquery()
        )
        return int(await self.session.scalar(select(func.count()).select_from(found)) or 0) < SEARCH_PROBE_MATCHES

    async def insert_new_ignoring_taken_emails(self, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
        """One multi-row insert; rows whose email is taken are skipped. Returns the ids inserted."""
        return await insert_new(self.session, Customer.__table__, rows, "id")

    async def repoint_merged(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID, now: dt.datetime) -> None:
        """Customers merged earlier into the duplicate now point at the survivor: one hop, always.
        That is a change of each of them (what a read of it answers): a new version and
        `updated_at` (`now`), so their ETags change, a sync of what changed since a moment sees
        them, and their history records the move."""
        await self.session.execute(
            update(Customer)
            .where(Customer.merged_into_id == duplicate_id)
            .values(merged_into_id=survivor_id, version=Customer.version + 1, updated_at=now)
        )

    async def history_page(self, customer_id: uuid.UUID, field: str | None, page: PageParams) -> list[CustomerChange]:
        """The customer's recorded changes, newest first; with `field`, those that changed it."""
        stmt = select(CustomerChange).where(CustomerChange.customer_id == customer_id)
        if field is not None:
            stmt = stmt.where(CustomerChange.changes.has_key(field))
        return list((await self.session.scalars(keyset.apply(stmt, HISTORY_ORDER, CustomerChange.seq, page))).all())

    async def merged_into(self, survivor_id: uuid.UUID) -> list[Customer]:
        return list((await self.session.scalars(select(Customer).where(Customer.merged_into_id == survivor_id))).all())


_CUSTOMER_COLUMNS = ", ".join(c.name for c in Customer.__table__.columns if c.name != "email_normalized")
_CUSTOMER_BY_ID = f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE id = $1"


async def note_author(db: asyncpg.Connection | AsyncSession, changed_by: str | None, via: ChangeVia) -> None:
    """Record who (an API key's name) and how (`update`, `batch`, `merge`...) the customer
    changes of the current transaction are made, for their history. Call it inside the
    transaction, before the changes."""
    if isinstance(db, AsyncSession):
        await db.execute(_AUTHOR_IN_SESSION, {"by": changed_by or "", "via": via})
    else:
        await db.execute(_AUTHOR, changed_by or "", via)


async def read_customer(db: asyncpg.Pool | asyncpg.Connection, customer_id: uuid.UUID) -> dict[str, Any] | None:
    """One customer as a plain dict, for answering a read: one prepared statement on the
    asyncpg pool (or one of its connections), no session or identity map (see cxkit.pg_pool)."""
    row = await db.fetchrow(_CUSTOMER_BY_ID, customer_id)
    return dict(row) if row is not None else None


def export_query(filters: CustomerFilters, sort: keyset.Sort, columns: Sequence[str]) -> CompiledQuery:
    """Every customer the list shows with these filters, in its order, unpaged: `columns` of
    each (for a CSV export through a cursor on the pool)."""
    table = Customer.__table__
    stmt = select(*(table.c[name] for name in columns)).where(*matching(filters))
    return CompiledQuery(keyset.ordered(stmt, sort, Customer.id))


_REFERENCE = (
    "SELECT c.id, c.email, c.erased_at, s.id AS survivor_id, s.email AS survivor_email, s.erased_at AS survivor_erased_at "
    "FROM customers c LEFT JOIN customers s ON s.id = c.merged_into_id WHERE c.id = $1"
)


async def read_reference(db: asyncpg.Pool | asyncpg.Connection, customer_id: uuid.UUID) -> asyncpg.Record | None:
    """A customer named by id with its survivor, if it was merged: one statement."""
    return await db.fetchrow(_REFERENCE, customer_id)


_STILL_LIVE = "SELECT 1 FROM customers WHERE id = $1::uuid AND erased_at IS NULL AND merged_into_id IS NULL FOR KEY SHARE"


def still_live(customer_id: uuid.UUID) -> Guard:
    """The condition a row written for a customer read as live (`read_reference`: neither erased
    nor merged) goes in on: still so when the inserting statement locks the customer. Read
    outside any transaction, the customer may be being erased or merged meanwhile (its row held
    `FOR UPDATE`); the insert's foreign key check would wait and then succeed, keeping what the
    erasure removes, or leaving the row on the duplicate. Guarded, the insert waits, reads the
    row as committed and inserts nothing; the caller reads the customer again."""
    return Guard(_STILL_LIVE, (customer_id,))


# The row locked, and the change's author noted (`note_author`) in the same round trip: the
# author's settings are a one-row subquery joined to the row, so they are set whenever the row
# is returned (transaction-local, as `note_author` sets them).
_LOCK_CUSTOMER = (
    f"SELECT {', '.join(f'c.{c.name}' for c in Customer.__table__.columns)} FROM customers AS c, "
    f"(SELECT {_set_author('$2', '$3')}) AS author "
    "WHERE c.id = $1 FOR UPDATE OF c"
)
_ID_BY_EMAIL = CompiledQuery(select(Customer.id).where(Customer.email_normalized == bindparam("email")))
_ID_BY_EXTERNAL_ID = CompiledQuery(select(Customer.id).where(Customer.external_id == bindparam("external_id")))
_UPDATES: dict[tuple[OpenDealValue, tuple[str, ...]], CompiledQuery] = {}


async def lock_customer(
    conn: asyncpg.Connection, customer_id: uuid.UUID, changed_by: str | None, via: ChangeVia
) -> asyncpg.Record | None:
    """The customer's row, locked until the transaction ends (every column), with the changes
    the transaction goes on to make recorded as made by `changed_by` through `via` (what
    `note_author` does, in the same statement)."""
    return await conn.fetchrow(_LOCK_CUSTOMER, customer_id, changed_by or "", via)


async def id_by_email(conn: asyncpg.Connection, email: str) -> uuid.UUID | None:
    """The id of the customer holding this email (compared case-insensitively), if any."""
    return await _ID_BY_EMAIL.fetchval(conn, email=normalized_email(email))


async def id_by_external_id_on(conn: asyncpg.Connection, external_id: str) -> uuid.UUID | None:
    """The id of the customer holding this external id, if any."""
    return await _ID_BY_EXTERNAL_ID.fetchval(conn, external_id=external_id)


async def update_customer_row(
    conn: asyncpg.Connection, customer_id: uuid.UUID, values: dict[str, Any], open_deal_value: OpenDealValue
) -> asyncpg.Record:
    """Write `values` (column -> value) to the customer, bump its version, and return the row
    with its current sum of open deal amounts (`open_deal_value`), read by the same statement
    (so after any deal change that committed before this transaction took the customer's lock)."""
    columns = tuple(sorted(values))
    query = _UPDATES.get((open_deal_value, columns))
    if query is None:
        stmt = (
            update(Customer)
            .where(Customer.id == bindparam("customer_id"))
            .values({c: bindparam(f"v_{c}") for c in columns} | {"version": Customer.version + 1})
            .returning(*Customer.__table__.columns, open_deal_value(Customer.id).scalar_subquery().label("open_deal_value"))
        )
        query = _UPDATES[open_deal_value, columns] = CompiledQuery(stmt)
    row = await query.fetchrow(conn, customer_id=customer_id, **{f"v_{c}": v for c, v in values.items()})
    assert row is not None, "update_customer_row on a customer that is not locked"
    return row


_OPT_OUT_SETTERS: dict[tuple[OpenDealValue, bool], CompiledQuery] = {}
_MERGED_AWAY = "SELECT id, merged_into_id FROM customers WHERE id = ANY($1::uuid[]) AND merged_into_id IS NOT NULL"


def _set_opt_out_query(open_deal_value: OpenDealValue, opted_out: bool) -> CompiledQuery:
    named = aliased(Customer)
    asked = select(
        func.unnest(bindparam("ids", type_=ARRAY(Uuid))).label("id"),
        func.unnest(cast(bindparam("ats"), ARRAY(DateTime(timezone=True)))).label("at"),
    ).subquery("asked")
    # Each wish goes to its customer's live record (a merged duplicate's survivor); of several for
    # one record, the latest counts.
    live_id = func.coalesce(named.merged_into_id, named.id)
    wish = (
        select(live_id.label("id"), func.max(asked.c.at).label("at"))
        .join(named, named.id == asked.c.id)
        .group_by(live_id)
        .cte("wish")
    )

    def asked_before(at: Any) -> ColumnElement[bool]:  # the flag's own time, if any, is older than `at`
        return or_(Customer.survey_opt_out_at.is_(None), Customer.survey_opt_out_at < at)

    # Locked in id order (as a batch upsert locks them, so the two cannot deadlock), unless erased
    # or its flag was asked for at the wish's time or later. FOR NO KEY UPDATE (no key changes):
    # the consumer's transaction holds these customers FOR KEY SHARE already (`event_targets`),
    # and two such transactions raising that lock to FOR UPDATE would each wait for the other.
    locked = locking(
        select(Customer.id, Customer.survey_opt_out.label("was"), wish.c.at)
        .join(wish, wish.c.id == Customer.id)
        .where(Customer.merged_into_id.is_(None), Customer.erased_at.is_(None), asked_before(wish.c.at))
        .order_by(Customer.id),
        "no key update",
        of=Customer,
    ).cte("locked")
    # A wish the flag already holds only moves its time on: no new version, no history, no event.
    changes = Customer.survey_opt_out.is_distinct_from(opted_out)
    stmt = (
        update(Customer)
        .where(Customer.id == locked.c.id, asked_before(locked.c.at))
        .values(
            survey_opt_out=opted_out,
            survey_opt_out_at=locked.c.at,
            version=Customer.version + case((changes, 1), else_=0),
            updated_at=case((changes, bindparam("now")), else_=Customer.updated_at),
        )
        .returning(
            *Customer.__table__.columns,
            locked.c.was,
            open_deal_value(Customer.id).scalar_subquery().label("open_deal_value"),
        )
    )
    return CompiledQuery(stmt)


async def set_survey_opt_out(
    conn: asyncpg.Connection,
    wishes: Sequence[tuple[uuid.UUID, dt.datetime]],
    opted_out: bool,
    now: Any,
    open_deal_value: OpenDealValue,
) -> list[asyncpg.Record]:
    """Set `survey_opt_out` to `opted_out` on the live record of each (id, time asked) (the
    survivor of a merged duplicate), where the flag was not asked for at that time or later
    (`survey_opt_out_at`), and date it with the wish: one statement. A change bumps the version; a
    flag that is `opted_out` already only gets the newer time. An erased customer and an unknown id
    are left alone. Returns the rows written, as they are now, each with `was` (the flag before)
    and its sum of open deal amounts (`open_deal_value`).

    The statement finds each wish's live record as its snapshot has it. A customer merged away
    meanwhile (its row held by the merge until it committed) is, once locked, no longer live: its
    wish is applied again, once, by a statement that sees the survivor (`_MERGED_AWAY`: only when
    some wish changed nothing, and then only those for records merged into one not written)."""
    if not wishes:
        return []
    key = (open_deal_value, opted_out)
    query = _OPT_OUT_SETTERS.get(key)
    if query is None:
        query = _OPT_OUT_SETTERS[key] = _set_opt_out_query(open_deal_value, opted_out)
    ids, ats = zip(*wishes, strict=True)
    rows: list[asyncpg.Record] = await query.fetch(conn, ids=list(ids), ats=list(ats), now=now)
    written = {row["id"] for row in rows}
    missed = list({cid for cid in ids if cid not in written})
    if not missed:
        return rows
    # A survivor written already took the wishes of duplicates merged before this call.
    merged_away = {row["id"] for row in await conn.fetch(_MERGED_AWAY, missed) if row["merged_into_id"] not in written}
    again = [(cid, at) for cid, at in wishes if cid in merged_away]
    if not again:
        return rows
    ids, ats = zip(*again, strict=True)
    return rows + await query.fetch(conn, ids=list(ids), ats=list(ats), now=now)


_LOCK_BY_KEYS = (
    f"SELECT {', '.join(c.name for c in Customer.__table__.columns)} FROM customers "
    "WHERE external_id = ANY($1::text[]) OR email_normalized = ANY($2::text[]) ORDER BY id FOR UPDATE"
)
# Written as sent: every column a batch upsert may set, for one UPDATE of many rows (with
# `email_normalized`, computed in Python: see `normalized_email`).
BATCH_COLUMNS = (
    "email",
    "name",
    "phone",
    "company",
    "lifecycle_stage",
    "owner",
    "tags",
    "attributes",
    "source",
    "campaign_id",
    "survey_opt_out",
    "external_id",
)
_BATCH_TYPES = {"tags": "jsonb", "attributes": "jsonb", "campaign_id": "uuid", "survey_opt_out": "boolean"}
_UPDATED_COLUMNS = (*BATCH_COLUMNS, "email_normalized")
_BATCH_UPDATE = (
    "UPDATE customers c SET "
    + ", ".join(
        f"{col} = u.{col}" + (f"::{_BATCH_TYPES[col]}" if _BATCH_TYPES.get(col) == "jsonb" else "") for col in _UPDATED_COLUMNS
    )
    + ", version = c.version + 1, updated_at = $"
    + str(len(_UPDATED_COLUMNS) + 2)
    + " FROM unnest($1::uuid[], "
    + ", ".join(
        f"${n}::{'text' if _BATCH_TYPES.get(col, 'text') == 'jsonb' else _BATCH_TYPES.get(col, 'text')}[]"
        for n, col in enumerate(_UPDATED_COLUMNS, start=2)
    )
    + f") AS u(id, {', '.join(_UPDATED_COLUMNS)}) WHERE c.id = u.id "
    + f"RETURNING {', '.join('c.' + c.name for c in Customer.__table__.columns)}"
)
_BATCH_INSERT = UnnestInsert(
    Customer.__table__, ("id", "email_normalized", "version", "created_at", "updated_at", *BATCH_COLUMNS)
)
_OPEN_DEAL_VALUES: dict[OpenDealValue, CompiledQuery] = {}


async def lock_by_keys(conn: asyncpg.Connection, external_ids: list[str], emails: list[str]) -> list[asyncpg.Record]:
    """The customers holding any of these external ids or (normalized) emails, locked in id
    order (two batches touching the same customers cannot deadlock)."""
    return await conn.fetch(_LOCK_BY_KEYS, external_ids, emails)


async def insert_many(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
    """One statement for all rows (JSON columns as text); a row whose email or external id is
    taken meanwhile is skipped. Returns the ids inserted."""
    as_text = [
        row | {"tags": orjson.dumps(row["tags"]).decode(), "attributes": orjson.dumps(row["attributes"]).decode()} for row in rows
    ]
    return set(await _BATCH_INSERT.inserted(conn, "id", as_text))


async def update_many(conn: asyncpg.Connection, rows: list[dict[str, Any]], now: Any) -> list[asyncpg.Record]:
    """Write each row's `BATCH_COLUMNS` and `email_normalized` (the whole new value) over its
    customer, bump versions: one statement. Returns the rows as they are now."""
    if not rows:
        return []
    columns = [[row["id"] for row in rows]]
    for col in _UPDATED_COLUMNS:
        values = [row[col] for row in rows]
        if col in ("tags", "attributes"):
            values = [orjson.dumps(v).decode() for v in values]
        columns.append(values)
    return await conn.fetch(_BATCH_UPDATE, *columns, now)


async def open_deal_values(
    conn: asyncpg.Connection, ids: list[uuid.UUID], open_deal_value: OpenDealValue
) -> dict[uuid.UUID, Any]:
    """id -> the customer's sum of open deal amounts, for many customers in one statement."""
    if not ids:
        return {}
    query = _OPEN_DEAL_VALUES.get(open_deal_value)
    if query is None:
        stmt = select(Customer.id, open_deal_value(Customer.id).scalar_subquery()).where(
            Customer.id == func.any(bindparam("ids", type_=ARRAY(Uuid)))
        )
        query = _OPEN_DEAL_VALUES[open_deal_value] = CompiledQuery(stmt)
    return {row[0]: row[1] for row in await query.fetch(conn, ids=ids)}
