"""Customer business rules: create, change, search, merge duplicates, erase (GDPR).

Every change is announced on `crm.customers.v1` through the outbox, in the same transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from crm.customers import repository
from crm.customers.lifecycle import CampaignExists, CampaignMembership, CustomerErasure, OpenDealValue, StoredFiles
from crm.customers.models import LIFECYCLE_STAGES, Customer, normalized_email
from crm.customers.repository import SORT_KEYS, CustomerFilters, CustomerRepository
from crm.customers.schemas import CustomerBatchItem, CustomerCreate, CustomerUpdate
from crm.db import SOURCE, IdempotencyKey, OutboxMessage, WebhookDelivery, as_money
from cxkit import keyset
from cxkit.db import new_id, utcnow
from cxkit.erasure import erase_platform_traces, forget_answers_mentioning
from cxkit.events.payloads import CustomerCreated, CustomerErased, CustomerMerged, CustomerSnapshot, CustomerUpdated
from cxkit.http.batch import InvalidItem, invalid_item_problem, item_problem
from cxkit.http.etag import check_if_match
from cxkit.http.pagination import PageParams
from cxkit.http.problems import Conflict, MergedAway, NotFound, Unprocessable
from cxkit.kafka.outbox import add_event, outbox_row
from cxkit.lifecycle import CustomerDataRegistry
from cxkit.pg_pool import CompiledQuery, Row, RowInsert, UnnestInsert

# Lifecycle stages a customer moves through as they buy; `churned` stands apart.
_PROGRESSION = [s for s in LIFECYCLE_STAGES if s != "churned"]
# Fields a merge copies from the duplicate when the survivor has none (the unique keys, email
# and external_id, are handed over apart: see `merge_customers`).
_FILLABLE = ("name", "phone", "company", "owner", "source", "campaign_id")
_PERSONAL = ("email", "email_normalized", "name", "phone", "company")


def snapshot(customer: Customer, open_deal_value: Decimal = Decimal("0")) -> dict[str, Any]:
    """The customer as announced on `crm.customers.v1`."""
    return CustomerSnapshot(
        id=customer.id,
        email=customer.email,
        name=customer.name,
        phone=customer.phone,
        company=customer.company,
        lifecycle_stage=customer.lifecycle_stage,
        owner=customer.owner,
        tags=list(customer.tags or []),
        source=customer.source,
        survey_opt_out=customer.survey_opt_out,
        open_deal_value=open_deal_value,
        version=customer.version,
        created_at=customer.created_at,
        updated_at=customer.updated_at,
        external_id=customer.external_id,
    ).model_dump()


async def current_snapshot(session: AsyncSession, customer: Customer, open_deal_value: OpenDealValue) -> dict[str, Any]:
    """The snapshot with the customer's current sum of open deal amounts (one SQL sum)."""
    return snapshot(customer, as_money(await session.scalar(open_deal_value(customer.id))))


def announce_created(session: AsyncSession, customer: Customer) -> None:
    """`customer.created` for a customer just inserted: nothing can refer to its new id yet, so
    it has no deals (no query needed to say so)."""
    add_event(
        session,
        OutboxMessage,
        "customer.created",
        source=SOURCE,
        subject=customer.id,
        data=CustomerCreated(**snapshot(customer, as_money(0))),
    )


async def announce_updated(session: AsyncSession, customer: Customer, changed: list[str], open_deal_value: OpenDealValue) -> None:
    add_event(
        session,
        OutboxMessage,
        "customer.updated",
        source=SOURCE,
        subject=customer.id,
        data=CustomerUpdated(**await current_snapshot(session, customer, open_deal_value), changed=changed),
    )


def _touch(customer: Customer) -> None:
    customer.version += 1
    customer.updated_at = utcnow()


def same_json(a: Any, b: Any) -> bool:
    """Whether two field values (decoded JSON, or plain column values) are the same, as
    PostgreSQL's jsonb compares them: `true` is not `1`, nor `false` `0`, at any depth (Python's
    `==` says they are); `1` and `1.0` are one number; an object's key order does not matter.
    Every change check of a customer's fields goes through it, so "unchanged" means unchanged."""
    pending = [(a, b)]
    while pending:  # its own stack: free JSON may be deep
        x, y = pending.pop()
        if isinstance(x, bool) or isinstance(y, bool):
            if x is not y:
                return False
        elif isinstance(x, dict):
            if not isinstance(y, dict) or x.keys() != y.keys():
                return False
            pending.extend((value, y[key]) for key, value in x.items())
        elif isinstance(x, list):
            if not isinstance(y, list) or len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif isinstance(y, (dict, list)) or x != y:
            return False
    return True


async def _require_campaign(campaigns: CampaignMembership | None, campaign_id: uuid.UUID | None) -> None:
    if campaign_id is None:
        return
    if campaigns is None:
        raise TypeError("a customer from a campaign is inserted with `campaigns`")
    if not await campaigns.exists(campaign_id):
        raise Unprocessable(f"campaign_id {campaign_id} does not exist", errors=[_field_error("campaign_id")])


def _field_error(field: str, msg: str = "unknown id") -> dict[str, Any]:
    return {"loc": ["body", field], "msg": msg, "type": "reference"}


async def create_customer(session: AsyncSession, data: CustomerCreate, campaigns: CampaignMembership) -> Customer:
    email = str(data.email)
    repo = CustomerRepository(session)
    if await repo.get_by_email(email):
        raise Conflict(f"a customer with email {email} already exists")
    if data.external_id is not None and await repo.id_by_external_id(data.external_id) is not None:
        raise Conflict(f"a customer with external_id {data.external_id} already exists")
    return await insert_customer(session, **data.model_dump(exclude={"email"}), email=email, campaigns=campaigns)


async def insert_customer(
    session: AsyncSession,
    *,
    email: str | None,
    name: str | None = None,
    lifecycle_stage: str = "lead",
    tags: list[str] | None = None,
    attributes: dict[str, Any] | None = None,
    campaign_id: uuid.UUID | None = None,
    survey_opt_out: bool = False,
    savepoint: bool = False,
    campaigns: CampaignMembership | None = None,
    **fields: Any,
) -> Customer:
    """Insert a new customer and announce `customer.created`. A customer from a campaign (which
    needs `campaigns`) becomes a member of it that responded. A duplicate email is a 409 (with
    `savepoint`, the IntegrityError is raised instead, and the transaction stays usable)."""
    await _require_campaign(campaigns, campaign_id)
    repo = CustomerRepository(session)
    now = utcnow()
    customer = Customer(
        id=new_id(),
        email=email,
        email_normalized=normalized_email(email) if email else None,
        name=name,
        lifecycle_stage=lifecycle_stage,
        tags=sorted(set(tags or [])),
        attributes=attributes or {},
        campaign_id=campaign_id,
        survey_opt_out=survey_opt_out,
        version=1,
        created_at=now,
        updated_at=now,
        **fields,
    )
    if savepoint:
        # Added inside the savepoint: begin_nested() flushes what is pending before it.
        async with session.begin_nested():
            repo.add(customer)
            await repo.flush()
    else:
        repo.add(customer)
        try:
            # Flushed here so a concurrent duplicate surfaces as 409, not at commit time.
            await repo.flush()
        except IntegrityError:
            raise Conflict(f"a customer with email {email} already exists") from None
    if campaign_id is not None:
        assert campaigns is not None  # _require_campaign refused it otherwise
        await campaigns.add_member(campaign_id, customer_id=customer.id, responded_at=now, response="created")
    announce_created(session, customer)
    return customer


async def find_or_create_by_email(session: AsyncSession, email: str, *, source: str | None) -> tuple[Customer, bool]:
    """The customer with this email (case-insensitive; a merged duplicate resolves to its
    survivor), or a new lead-stage one, announced. Returns (customer, created)."""
    repo = CustomerRepository(session)
    normalized = normalized_email(email)
    found = await repo.get_by_email(normalized)
    if found is None:
        try:
            return await insert_customer(session, email=email.strip(), source=source, savepoint=True), True
        except IntegrityError:
            # Someone created it a moment ago: use theirs.
            found = await repo.get_by_email(normalized)
            if found is None:
                raise
    return await _follow_merges(session, found), False


async def _follow_merges(session: AsyncSession, customer: Customer) -> Customer:
    if customer.merged_into_id is None:
        return customer
    survivor = await CustomerRepository(session).get(customer.merged_into_id)
    return survivor if survivor is not None else customer


async def read_customer(db: asyncpg.Pool | asyncpg.Connection, customer_id: uuid.UUID) -> dict[str, Any]:
    """For answering a GET, read over the asyncpg pool: a merged duplicate raises MergedAway (the
    client is redirected)."""
    customer = await repository.read_customer(db, customer_id)
    if customer is None:
        raise NotFound(f"customer {customer_id} does not exist")
    if customer["merged_into_id"] is not None:
        raise MergedAway(customer["id"], customer["merged_into_id"])
    return customer


async def live_customer_for_update(session: AsyncSession, customer_id: uuid.UUID) -> Customer:
    """For writes on the customer's fields other than its keys (email, external id): locked
    (`CustomerRepository.lock_for_change`), neither merged away nor erased."""
    customer = await CustomerRepository(session).lock_for_change(customer_id)
    if customer is None:
        raise NotFound(f"customer {customer_id} does not exist")
    if customer.merged_into_id is not None:
        raise Conflict(
            f"customer {customer_id} was merged into {customer.merged_into_id}; change that one",
            merged_into=str(customer.merged_into_id),
        )
    if customer.erased_at is not None:
        raise Conflict(f"customer {customer_id} was erased")
    return customer


async def live_customer_or_none(session: AsyncSession, customer_id: uuid.UUID) -> Customer | None:
    """The customer, locked (`CustomerRepository.lock_for_change`), if it is neither merged away
    nor erased (for side effects such as a lifecycle move that only apply to a live record)."""
    customer = await CustomerRepository(session).lock_for_change(customer_id)
    if customer is None or customer.merged_into_id is not None or customer.erased_at is not None:
        return None
    return customer


async def lock_owner(session: AsyncSession, customer_id: uuid.UUID) -> None:
    """Before a row of the customer's is locked for a change that may go on to change the
    customer (its stage, its open deal value: `live_customer_or_none`, `announce_open_deal_value`):
    the customer locked `FOR KEY SHARE` until the transaction ends. An erase or a merge locks the
    customer, then its rows; the change then takes its locks in that order too, and the two cannot
    deadlock (the one waits for the other). Merged or erased, the customer is locked all the same."""
    await CustomerRepository(session).lock_key_share(customer_id)


async def resolve_reference(session: AsyncSession, customer_id: uuid.UUID, field: str = "customer_id") -> Customer:
    """A customer named in a request body, for a row this transaction goes on to write for it:
    unknown or erased is a 422; a merged duplicate resolves to its survivor, so stale ids held by
    clients keep working. Both are locked `FOR KEY SHARE` until the transaction ends
    (`CustomerRepository.lock_for_reference`), so an erase or a merge running meanwhile is either
    seen done or waits for the new row (which it then erases or moves): every caller writes."""
    repo = CustomerRepository(session)
    await repo.lock_for_reference(customer_id)
    customer = await repo.get(customer_id)
    if customer is None:
        raise Unprocessable(f"{field} {customer_id} does not exist", errors=[_field_error(field)])
    customer = await _follow_merges(session, customer)
    if customer.erased_at is not None:
        raise Unprocessable(f"{field} {customer_id} was erased", errors=[_field_error(field, "erased")])
    return customer


async def resolve_reference_on(
    db: asyncpg.Pool | asyncpg.Connection, customer_id: uuid.UUID, field: str = "customer_id"
) -> tuple[uuid.UUID, str | None]:
    """`resolve_reference` on a plain asyncpg connection (hot paths): (id, email) of the live
    customer behind `customer_id`, by the same rules."""
    row = await repository.read_reference(db, customer_id)
    if row is None:
        raise Unprocessable(f"{field} {customer_id} does not exist", errors=[_field_error(field)])
    if row["survivor_id"] is not None:
        resolved, email, erased_at = row["survivor_id"], row["survivor_email"], row["survivor_erased_at"]
    else:
        resolved, email, erased_at = row["id"], row["email"], row["erased_at"]
    if erased_at is not None:
        raise Unprocessable(f"{field} {customer_id} was erased", errors=[_field_error(field, "erased")])
    return resolved, email


async def update_customer_on(
    conn: asyncpg.Connection,
    customer_id: uuid.UUID,
    data: CustomerUpdate,
    if_match: str | None,
    *,
    campaign_exists: CampaignExists,
    open_deal_value: OpenDealValue,
    changed_by: str | None = None,
) -> tuple[dict[str, Any], list[RowInsert]]:
    """`update_customer` on a plain asyncpg connection inside its transaction (the hot write):
    the same rules, answers and event. Returns the customer as it is now and the outbox row of
    its `customer.updated` (none when nothing changed). The change is recorded in the customer's
    history as made by `changed_by` (an API key's name) through an `update`."""
    row = await repository.lock_customer(conn, customer_id, changed_by, "update")
    if row is None:
        raise NotFound(f"customer {customer_id} does not exist")
    if row["merged_into_id"] is not None:
        raise Conflict(
            f"customer {customer_id} was merged into {row['merged_into_id']}; change that one",
            merged_into=str(row["merged_into_id"]),
        )
    if row["erased_at"] is not None:
        raise Conflict(f"customer {customer_id} was erased")
    check_if_match(if_match, row["version"])
    values: dict[str, Any] = {}
    for field in data.model_fields_set:
        value = getattr(data, field)
        if field == "email":
            value = str(value)
            if normalized_email(value) != row["email_normalized"]:
                other = await repository.id_by_email(conn, value)
                if other is not None and other != customer_id:
                    raise Conflict(f"a customer with email {value} already exists")
                values["email_normalized"] = normalized_email(value)
        elif field == "external_id" and value is not None and value != row["external_id"]:
            other = await repository.id_by_external_id_on(conn, value)
            if other is not None and other != customer_id:
                raise Conflict(f"a customer with external_id {value} already exists")
        elif field == "tags":
            value = sorted(set(value))
        elif field == "campaign_id" and value not in (None, row["campaign_id"]) and not await campaign_exists(conn, value):
            raise Unprocessable(f"campaign_id {value} does not exist", errors=[_field_error("campaign_id")])
        if not same_json(row[field], value):
            values[field] = value
    changed = sorted(values.keys() - {"email_normalized"})
    if not changed:
        return dict(row), []
    values["updated_at"] = utcnow()
    try:
        updated = await repository.update_customer_row(conn, customer_id, values, open_deal_value)
    except asyncpg.UniqueViolationError:
        raise Conflict("a customer with this email or external_id already exists (written meanwhile)") from None
    snap = snapshot(Row(updated), as_money(updated["open_deal_value"]))
    event = outbox_row("customer.updated", source=SOURCE, subject=customer_id, data=CustomerUpdated(**snap, changed=changed))
    return dict(updated), [RowInsert(OutboxMessage.__table__, event)]


def _moves_forward(current: str, target: str) -> bool:
    """Whether `target` is a later step of the progression than `current`: never out of
    `churned`, and never into it (it is not a step forward)."""
    if current not in _PROGRESSION or target not in _PROGRESSION:
        return False
    return _PROGRESSION.index(target) > _PROGRESSION.index(current)


async def advance_lifecycle(session: AsyncSession, customer: Customer, target: str, open_deal_value: OpenDealValue) -> bool:
    """Move the customer forward to `target` (never back, never out of `churned`) and
    announce it. Returns whether it moved. A customer merged away or erased (meanwhile: `customer`
    may have been read before) is left alone: its record no longer changes."""
    if not _moves_forward(customer.lifecycle_stage, target):
        return False
    # Locked (and refreshed) before the version is bumped, so concurrent moves serialise.
    locked = await CustomerRepository(session).lock_for_change(customer.id)
    if locked is None or locked.merged_into_id is not None or locked.erased_at is not None:
        return False
    if not _moves_forward(locked.lifecycle_stage, target):
        return False
    customer = locked
    customer.lifecycle_stage = target
    _touch(customer)
    await announce_updated(session, customer, ["lifecycle_stage"], open_deal_value)
    return True


async def announce_open_deal_value(session: AsyncSession, customer_id: uuid.UUID, open_deal_value: OpenDealValue) -> None:
    """The customer's open deal value changed without a stage change (an amount was edited,
    a deal deleted): a new version of the customer carries the new sum."""
    customer = await CustomerRepository(session).lock_for_change(customer_id)
    if customer is None or customer.erased_at is not None or customer.merged_into_id is not None:
        return
    _touch(customer)
    await announce_updated(session, customer, ["open_deal_value"], open_deal_value)


async def customer_history(
    session: AsyncSession, customer_id: uuid.UUID, field: str | None, page: PageParams
) -> tuple[list[dict[str, Any]], str | None]:
    """The customer's field changes, newest first (with `field`, only those that changed it),
    each with its changes as a list in field-name order. A merged duplicate has its own history
    up to the merge; an erased customer's keeps which fields changed, without their values."""
    repo = CustomerRepository(session)
    if await repo.get(customer_id) is None:
        raise NotFound(f"customer {customer_id} does not exist")
    # `seq` alone orders the history (unique): the cursor holds no id.
    rows, cursor = keyset.cut(
        await repo.history_page(customer_id, field, page),
        repository.HISTORY_ORDER,
        page,
        lambda row: (row.seq, row.customer_id),
    )
    entries = [
        {
            "seq": row.seq,
            "id": row.id,
            "version": row.version,
            "changed_at": row.changed_at,
            "changed_by": row.changed_by,
            "via": row.via,
            "changes": field_changes(row.changes),
        }
        for row in rows
    ]
    return entries, cursor


def field_changes(changes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """A recorded change (`customer_changes.changes`: field -> {from, to}) as the list the
    history and the timeline show: one item per field, in field-name order."""
    return [{"field": name, "from": change["from"], "to": change["to"]} for name, change in sorted(changes.items())]


async def list_customers(
    session: AsyncSession, filters: CustomerFilters, sort_token: str, page: PageParams
) -> tuple[list[Customer], str | None]:
    sort = keyset.parse_sort(sort_token, SORT_KEYS)
    rows = await CustomerRepository(session).list_page(filters, sort, page)
    return keyset.cut(rows, sort, page)


def export_query(filters: CustomerFilters, sort_token: str, columns: Sequence[str]) -> CompiledQuery:
    """The statement of a customer export: what `list_customers` shows, unpaged."""
    return repository.export_query(filters, keyset.parse_sort(sort_token, SORT_KEYS), columns)


async def merge_customers(
    session: AsyncSession,
    survivor_id: uuid.UUID,
    duplicate_id: uuid.UUID,
    if_match: str | None,
    *,
    customer_data: CustomerDataRegistry[CustomerErasure],
    open_deal_value: OpenDealValue,
) -> Customer:
    """Fold the duplicate into the survivor in one transaction: the survivor keeps its values,
    gains the duplicate's where it has none, unites tags, and takes over all history (the rows
    of every domain in `customer_data`).

    The unique keys: a survivor without an email takes the duplicate's (a converted name-only
    lead has none), and one without an external id the duplicate's, which the merged record then
    no longer holds. The duplicate's email is freed in any case (a new customer may take it); an
    external id the survivor did not take stays on the merged record, so an upsert by it is told
    which customer it went into instead of making the duplicate again. Duplicates merged earlier
    into this duplicate now point at the survivor (a change of theirs: new versions)."""
    if survivor_id == duplicate_id:
        raise Unprocessable("a customer cannot be merged into itself", errors=[_field_error("duplicate_id", "same as survivor")])
    repo = CustomerRepository(session)
    # Lock both rows, always in id order, so two crossing merges cannot deadlock.
    locked: dict[uuid.UUID, Customer | None] = {}
    for cid in sorted((survivor_id, duplicate_id)):
        locked[cid] = await repo.get(cid, for_update=True)
    survivor, duplicate = locked[survivor_id], locked[duplicate_id]
    if survivor is None:
        raise NotFound(f"customer {survivor_id} does not exist")
    if duplicate is None:
        raise Unprocessable(f"duplicate_id {duplicate_id} does not exist", errors=[_field_error("duplicate_id")])
    if survivor.merged_into_id is not None:
        raise Conflict(
            f"customer {survivor_id} was itself merged into {survivor.merged_into_id}", merged_into=str(survivor.merged_into_id)
        )
    if duplicate.merged_into_id is not None:
        raise Conflict(
            f"customer {duplicate_id} was already merged into {duplicate.merged_into_id}",
            merged_into=str(duplicate.merged_into_id),
        )
    if survivor.erased_at is not None or duplicate.erased_at is not None:
        raise Conflict("an erased customer cannot take part in a merge")
    check_if_match(if_match, survivor.version)

    # The duplicate gives up its keys first, in a statement of its own: email_normalized and
    # external_id are unique (and not deferrable), and the survivor may take them. The survivor's
    # changes are then one statement, so one entry in its history.
    takes_email = survivor.email is None and duplicate.email is not None
    takes_external_id = survivor.external_id is None and duplicate.external_id is not None
    external_id = duplicate.external_id
    duplicate.email_normalized = None  # frees the address for the survivor or a new record
    if takes_external_id:
        duplicate.external_id = None
    duplicate.merged_into_id = survivor.id
    _touch(duplicate)
    await repo.flush()

    if takes_email:
        assert duplicate.email is not None
        survivor.email = duplicate.email
        survivor.email_normalized = normalized_email(duplicate.email)
    if takes_external_id:
        survivor.external_id = external_id
    for field in _FILLABLE:
        if getattr(survivor, field) in (None, "") and getattr(duplicate, field) not in (None, ""):
            setattr(survivor, field, getattr(duplicate, field))
    survivor.attributes = {**(duplicate.attributes or {}), **(survivor.attributes or {})}
    survivor.tags = sorted(set(survivor.tags or []) | set(duplicate.tags or []))
    # Consent: an opt-out on either record is honoured. The flag keeps the latest time that value
    # was asked for on either record, so a survey wish older than that still changes nothing (with
    # no time known and the flag changed, the database dates the merge instead).
    merged_opt_out = survivor.survey_opt_out or duplicate.survey_opt_out
    asked = [r.survey_opt_out_at for r in (survivor, duplicate) if r.survey_opt_out == merged_opt_out and r.survey_opt_out_at]
    survivor.survey_opt_out = merged_opt_out
    if asked:
        survivor.survey_opt_out_at = max(asked)
    _touch(survivor)
    try:
        await repo.flush()
    except IntegrityError:
        # Only an address whose key another customer holds under a rule older than
        # `normalized_email` could still clash here.
        raise Conflict(f"a customer with email {survivor.email} already exists") from None

    await customer_data.repoint(session, duplicate.id, survivor.id)
    await repo.repoint_merged(duplicate.id, survivor.id, survivor.updated_at)

    add_event(
        session,
        OutboxMessage,
        "customer.merged",
        source=SOURCE,
        subject=survivor.id,
        data=CustomerMerged(
            survivor_id=survivor.id,
            duplicate_id=duplicate.id,
            survivor=CustomerSnapshot(**await current_snapshot(session, survivor, open_deal_value)),
        ),
    )
    return survivor


async def erase_customer(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    customer_data: CustomerDataRegistry[CustomerErasure],
    stored_files: StoredFiles,
) -> bool:
    """GDPR erasure: personal fields and free text go (the customer's own words in survey
    answers and feedback too; what each domain in `customer_data` holds of them), files are
    deleted, and so are the sent events and stored idempotent answers that mention them; the
    record, its amounts, dates, stage changes and scores stay, anonymous. Duplicates merged into
    this customer are erased with it. Returns False when it was already erased (nothing to do)."""
    repo = CustomerRepository(session)
    customer = await repo.get(customer_id, for_update=True)
    if customer is None:
        raise NotFound(f"customer {customer_id} does not exist")
    if customer.merged_into_id is not None:
        raise Conflict(
            f"customer {customer_id} was merged into {customer.merged_into_id}; erase that one",
            merged_into=str(customer.merged_into_id),
        )
    if customer.erased_at is not None:
        return False
    now = utcnow()
    targets = [customer, *await repo.merged_into(customer.id)]
    emails: list[str] = []
    erasures: list[CustomerErasure] = []
    for target in targets:
        if target.email:
            emails.append(target.email)
        # The domains first, while the record still holds the address: a domain may find the
        # customer's rows by it (`crm.customer_data`).
        erasure = CustomerErasure(customer_id=target.id, erased_at=now)
        await customer_data.erase(session, erasure)
        erasures.append(erasure)
        for field in _PERSONAL:
            setattr(target, field, None)
        target.attributes = {}
        target.erased_at = now
        _touch(target)
        await erase_platform_traces(
            session,
            target.id,
            outbox_model=OutboxMessage,
            idempotency_model=IdempotencyKey,
            webhook_delivery_model=WebhookDelivery,
        )
    # Answers written before the person was a customer (e.g. their lead) name them by email only.
    await forget_answers_mentioning(session, IdempotencyKey, emails)
    await repo.flush()
    # Files go before the commit: if the commit then failed, a retried erase finds the rows
    # again and the missing files are skipped. Erasing too early beats keeping too long.
    for erasure in erasures:
        for path in erasure.files:
            stored_files.delete(path)
    for target in targets:
        add_event(
            session,
            OutboxMessage,
            "customer.erased",
            source=SOURCE,
            subject=target.id,
            data=CustomerErased(customer_id=target.id, erased_at=now),
        )
    return True


# --- batch upsert --------------------------------------------------------------------------------

_CAMPAIGN_MEMBERS = (
    "INSERT INTO campaign_members (id, campaign_id, customer_id, responded_at, response, added_at) "
    "SELECT gen_random_uuid(), c, m, $3, 'created', $3 FROM unnest($1::uuid[], $2::uuid[]) AS u(c, m) "
    "ON CONFLICT DO NOTHING"
)
_OUTBOX_COLUMNS = ("event_id", "topic", "key", "event_type", "value", "headers", "created_at")
_OUTBOX_INSERT = UnnestInsert(OutboxMessage.__table__, _OUTBOX_COLUMNS)


async def _add_events(conn: asyncpg.Connection, events: list[dict[str, Any]]) -> None:
    """The outbox rows (`outbox_row`) of many changes in one insert."""
    if events:
        for event in events:
            event["headers"] = orjson.dumps(event["headers"]).decode()
        await _OUTBOX_INSERT.execute(conn, _OUTBOX_INSERT.column_lists(events))


def _key_error(field: str, msg: str, kind: str) -> list[dict[str, Any]]:
    return [{"loc": [field], "msg": msg, "type": kind}]


async def upsert_batch(
    conn: asyncpg.Connection,
    items: Sequence[CustomerBatchItem | InvalidItem],
    *,
    campaign_exists: CampaignExists,
    open_deal_value: OpenDealValue,
    changed_by: str | None = None,
) -> list[dict[str, Any]]:
    """Create or update each item's customer, inside the caller's transaction, with a handful of
    statements whatever the batch's size: one locking read of every customer the items name,
    one insert of the new ones, one update of the changed ones, one read of their open deal
    values, one insert of the campaign memberships and one of the events (`customer.created`,
    `customer.updated` with what `changed`; nothing for an unchanged customer).

    An item is matched by its `external_id` when it sends one (a customer found by the email
    instead, without an external id yet, is given it), else by its `email`. An item that repeats
    the email or external id of an earlier item, or names the same customer, gets a 409 problem
    ("duplicate of item i in this batch") and changes nothing; so do a taken email or external id,
    and a merged or erased customer. Returns one result per item, in order. The updates are
    recorded in the customers' history as made by `changed_by` through a `batch`."""
    results: list[dict[str, Any] | None] = [None] * len(items)
    valid: list[tuple[int, CustomerBatchItem]] = []
    first: dict[tuple[str, str], int] = {}
    for i, item in enumerate(items):
        if isinstance(item, InvalidItem):
            results[i] = {"status": "error", "problem": invalid_item_problem(item)}
            continue
        keys = [("external_id", item.external_id)] if item.external_id is not None else []
        if item.email is not None:
            keys.append(("email", normalized_email(str(item.email))))
        repeated = next(((k, first[k]) for k in keys if k in first), None)
        if repeated is not None:
            (field, _), j = repeated
            results[i] = {
                "status": "error",
                "problem": item_problem(
                    409,
                    f"duplicate of item {j} in this batch (same {field})",
                    _key_error(field, "repeated in this batch", "duplicate"),
                ),
            }
            continue
        for key in keys:
            first[key] = i
        valid.append((i, item))

    campaigns = {item.campaign_id for _, item in valid if item.campaign_id is not None}
    known_campaigns = {c for c in campaigns if await campaign_exists(conn, c)}
    locked = await repository.lock_by_keys(
        conn,
        [item.external_id for _, item in valid if item.external_id is not None],
        [normalized_email(str(item.email)) for _, item in valid if item.email is not None],
    )
    by_external = {row["external_id"]: row for row in locked if row["external_id"] is not None}
    by_email = {row["email_normalized"]: row for row in locked if row["email_normalized"] is not None}

    now = utcnow()
    creates: list[tuple[int, dict[str, Any]]] = []
    updates: list[tuple[int, dict[str, Any], list[str]]] = []
    unchanged: list[tuple[int, asyncpg.Record]] = []
    targeted: dict[uuid.UUID, int] = {}
    for i, item in valid:
        error = _batch_error(item, known_campaigns)
        email = str(item.email) if item.email is not None else None
        target = by_external.get(item.external_id) if item.external_id is not None else None
        if target is None and email is not None:
            target = by_email.get(normalized_email(email))
            if target is not None and item.external_id is not None and target["external_id"] is not None:
                error = error or item_problem(
                    409,
                    f"the customer with email {email} has another external_id ({target['external_id']})",
                    _key_error("email", "held by a customer with another external_id", "conflict"),
                )
        if error is None and target is not None:
            error = _target_error(item, email, target, by_email, targeted.get(target["id"]))
        if error is not None:
            results[i] = {"status": "error", "problem": error}
            continue
        if target is None:
            if email is None or item.name is None:
                missing = [f for f in ("email", "name") if getattr(item, f) is None]
                results[i] = {
                    "status": "error",
                    "problem": item_problem(
                        422,
                        "no customer has this external_id; a new customer needs email and name",
                        [{"loc": [f], "msg": "Field required", "type": "missing"} for f in missing],
                    ),
                }
                continue
            creates.append((i, _new_row(item, email, now)))
            continue
        targeted[target["id"]] = i
        values, changed = _changed_values(item, target)
        if changed:
            updates.append((i, values, changed))
        else:
            unchanged.append((i, target))

    events: list[dict[str, Any]] = []
    inserted = await repository.insert_many(conn, [row for _, row in creates])
    members: list[tuple[uuid.UUID, uuid.UUID]] = []
    for i, row in creates:
        if row["id"] not in inserted:
            results[i] = {
                "status": "error",
                "problem": item_problem(409, "a customer with this email or external_id was created meanwhile; send it again"),
            }
            continue
        customer = Row(_as_record(row))
        results[i] = {"status": "created", "customer": row}
        events.append(
            outbox_row(
                "customer.created", source=SOURCE, subject=row["id"], data=CustomerCreated(**snapshot(customer, as_money(0)))
            )
        )  # type: ignore[arg-type]
        if row["campaign_id"] is not None:
            members.append((row["campaign_id"], row["id"]))
    if members:
        await conn.execute(_CAMPAIGN_MEMBERS, [m[0] for m in members], [m[1] for m in members], now)

    if updates:
        await repository.note_author(conn, changed_by, "batch")
    try:
        written = {row["id"]: row for row in await repository.update_many(conn, [values for _, values, _ in updates], now)}
    except asyncpg.UniqueViolationError:
        # Only when items of one batch swap emails or external ids between existing customers.
        raise Conflict("the batch moves an email or external_id between customers; send those changes separately") from None
    deal_values = await repository.open_deal_values(conn, list(written), open_deal_value)
    for i, values, changed in updates:
        row = written[values["id"]]
        results[i] = {"status": "updated", "customer": dict(row), "changed": changed}
        snap = snapshot(Row(row), as_money(deal_values.get(row["id"])))  # type: ignore[arg-type]
        events.append(
            outbox_row("customer.updated", source=SOURCE, subject=row["id"], data=CustomerUpdated(**snap, changed=changed))
        )
    for i, row in unchanged:
        results[i] = {"status": "unchanged", "customer": dict(row)}
    await _add_events(conn, events)
    return [r for r in results if r is not None]


def _batch_error(item: CustomerBatchItem, known_campaigns: set[uuid.UUID]) -> dict[str, Any] | None:
    if item.campaign_id is not None and item.campaign_id not in known_campaigns:
        return item_problem(
            422, f"campaign_id {item.campaign_id} does not exist", _key_error("campaign_id", "unknown id", "reference")
        )
    return None


def _target_error(
    item: CustomerBatchItem,
    email: str | None,
    target: asyncpg.Record,
    by_email: dict[str, asyncpg.Record],
    earlier: int | None,
) -> dict[str, Any] | None:
    """Why the item cannot change the customer it matched, if it cannot."""
    if earlier is not None:
        return item_problem(
            409,
            f"duplicate of item {earlier} in this batch (same customer)",
            _key_error("email", "repeated in this batch", "duplicate"),
        )
    if target["merged_into_id"] is not None:
        return item_problem(409, f"customer {target['id']} was merged into {target['merged_into_id']}; change that one")
    if target["erased_at"] is not None:
        return item_problem(409, f"customer {target['id']} was erased")
    if email is not None and normalized_email(email) != target["email_normalized"]:
        holder = by_email.get(normalized_email(email))
        if holder is not None and holder["id"] != target["id"]:
            return item_problem(
                409, f"a customer with email {email} already exists", _key_error("email", "taken by another customer", "conflict")
            )
    return None


def _new_row(item: CustomerBatchItem, email: str, now: Any) -> dict[str, Any]:
    return {
        "id": new_id(),
        "email": email,
        "email_normalized": normalized_email(email),
        "version": 1,
        "created_at": now,
        "updated_at": now,
        "name": item.name,
        "phone": item.phone,
        "company": item.company,
        "lifecycle_stage": item.lifecycle_stage or "lead",
        "owner": item.owner,
        "tags": sorted(set(item.tags or [])),
        "attributes": item.attributes or {},
        "source": item.source,
        "campaign_id": item.campaign_id,
        "survey_opt_out": bool(item.survey_opt_out),
        "external_id": item.external_id,
    }


def _changed_values(item: CustomerBatchItem, target: asyncpg.Record) -> tuple[dict[str, Any], list[str]]:
    """The customer's `BATCH_COLUMNS` and `email_normalized` with the item's fields applied, and
    the names of those that changed. The key changes only with the email (a key stored under an
    older rule stays until the email changes)."""
    values = {col: target[col] for col in repository.BATCH_COLUMNS} | {
        "id": target["id"],
        "email_normalized": target["email_normalized"],
    }
    changed = []
    for field in item.model_fields_set:
        value = getattr(item, field)
        if field == "email":
            value = str(value)
        elif field == "tags":
            value = sorted(set(value))
        if not same_json(value, target[field]):
            values[field] = value
            changed.append(field)
            if field == "email":
                values["email_normalized"] = normalized_email(value)
    return values, sorted(changed)


def _as_record(row: dict[str, Any]) -> dict[str, Any]:
    return row | {"erased_at": None, "merged_into_id": None}


# --- survey opt-outs and opt-ins ------------------------------------------------------------------


async def set_survey_opt_out(
    conn: asyncpg.Connection,
    wishes: Sequence[tuple[uuid.UUID, dt.datetime]],
    opted_out: bool,
    *,
    open_deal_value: OpenDealValue,
) -> list[uuid.UUID]:
    """Set these customers' `survey_opt_out` to `opted_out`, as they asked the CEM service at the
    time given with each (`survey.opted_out`, or `survey.opted_in` to be asked again), inside the
    caller's transaction: a merged duplicate's survivor instead; an erased customer and an unknown
    id are left alone, and so is a customer whose flag was asked for at that time or later (by a
    newer wish, or set by hand since: a wish sent again late from the DLQ changes nothing). Each
    change is a change like a batch upsert's, made in one statement for them all: a new version,
    an entry in the customer's history (via `survey_opt_out` or `survey_opt_in`, by the service
    itself) and a `customer.updated`. A flag that holds the wish already only takes its newer time.
    Returns the ids of the customers changed."""
    if not wishes:
        return []
    await repository.note_author(conn, None, "survey_opt_out" if opted_out else "survey_opt_in")
    rows = await repository.set_survey_opt_out(conn, wishes, opted_out, utcnow(), open_deal_value)
    changed = [row for row in rows if row["was"] is not opted_out]
    events = []
    for row in changed:
        snap = snapshot(Row(row), as_money(row["open_deal_value"]))  # type: ignore[arg-type]
        events.append(
            outbox_row(
                "customer.updated", source=SOURCE, subject=row["id"], data=CustomerUpdated(**snap, changed=["survey_opt_out"])
            )
        )
    await _add_events(conn, events)
    return [row["id"] for row in changed]
