"""Touchpoint rules."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cem.customers.models import email_key
from cem.customers.repository import CustomerProfileRepository
from cem.recipients import ProfileFacts, Recipient
from cem.touchpoints.models import Touchpoint
from cem.touchpoints.repository import BATCH_COLUMNS, BY_KEY, TouchpointRepository, insert_interaction_batch, profiles_by_ids
from cem.touchpoints.schemas import StoredInteraction, TouchpointCreate, TouchpointUpdate, check_target
from cxkit import keyset
from cxkit.db import lock_keys, new_id, session_connection, utcnow
from cxkit.events.payloads import InteractionRecorded
from cxkit.fields import MAX_JSON_BYTES
from cxkit.http.etag import check_if_match
from cxkit.http.pagination import PageParams
from cxkit.http.problems import Conflict, NotFound, field_problem
from cxkit.ids import new_ids
from cxkit.kafka.consumer import Delivery, storable_json

# The CRM derives the id of an interaction event that carries none from the CloudEvent's source
# and id in this namespace; using the same one, both services name such an interaction alike.
_EVENT_NAMESPACE = uuid.UUID("2f0c6a57-3d1e-4f7b-9a55-6c2b8e1d4a90")
# What a journey shows of each of its touchpoints (`JourneyTouchpoint`, besides the id and the key,
# which never change): a change of one of these gives the journeys that show it a new version.
SHOWN_IN_JOURNEYS = frozenset({"name", "channel", "target_metric", "target_score"})


async def create_touchpoint(session: AsyncSession, data: TouchpointCreate) -> Touchpoint:
    repo = TouchpointRepository(session)
    if await repo.get_by_key(data.key):
        raise Conflict(f"a touchpoint with key {data.key!r} already exists")
    now = utcnow()
    touchpoint = Touchpoint(id=new_id(), **data.model_dump(), version=1, created_at=now, updated_at=now)
    repo.add(touchpoint)
    try:
        await repo.flush()
    except IntegrityError:
        raise Conflict(f"a touchpoint with key {data.key!r} already exists") from None
    return touchpoint


async def get_touchpoint(session: AsyncSession, touchpoint_id: uuid.UUID, *, for_update: bool = False) -> Touchpoint:
    touchpoint = await TouchpointRepository(session).get(touchpoint_id, for_update=for_update)
    if touchpoint is None:
        raise NotFound(f"touchpoint {touchpoint_id} does not exist")
    return touchpoint


async def update_touchpoint(
    session: AsyncSession, touchpoint_id: uuid.UUID, data: TouchpointUpdate, if_match: str | None
) -> Touchpoint:
    touchpoint = await get_touchpoint(session, touchpoint_id, for_update=True)
    check_if_match(if_match, touchpoint.version)
    changes = data.model_dump(exclude_unset=True)
    metric = changes.get("target_metric", touchpoint.target_metric)
    score = changes.get("target_score", touchpoint.target_score)
    problem = check_target(metric, score)
    if problem:
        raise field_problem(["body", "target_score"], problem)
    changed = {k: v for k, v in changes.items() if getattr(touchpoint, k) != v}
    if changed:
        for name, value in changed.items():
            setattr(touchpoint, name, value)
        touchpoint.version += 1
        touchpoint.updated_at = utcnow()
        repo = TouchpointRepository(session)
        await repo.flush()
        if changed.keys() & SHOWN_IN_JOURNEYS:
            await repo.touch_journeys_using(touchpoint.id)
    return touchpoint


async def delete_touchpoint(session: AsyncSession, touchpoint_id: uuid.UUID, if_match: str | None) -> None:
    """Refused while a journey or a survey uses the touchpoint; answers keep its key."""
    repo = TouchpointRepository(session)
    touchpoint = await get_touchpoint(session, touchpoint_id, for_update=True)
    check_if_match(if_match, touchpoint.version)
    journeys = await repo.journeys_using(touchpoint.id)
    surveys = await repo.surveys_using(touchpoint.key)
    if journeys or surveys:
        users = [f"journey {n!r}" for n in journeys] + [f"survey {n!r}" for n in surveys]
        raise Conflict(f"touchpoint {touchpoint.key!r} is in use by {', '.join(users)}; remove it there first")
    try:
        await repo.delete_by_id(touchpoint.id)
        await repo.flush()
    except IntegrityError:
        raise Conflict(f"touchpoint {touchpoint.key!r} was just added to a journey; remove it there first") from None


async def list_touchpoints(
    session: AsyncSession, page: PageParams, *, channel: str | None = None, journey_stage: str | None = None
) -> tuple[list[Touchpoint], str | None]:
    rows = await TouchpointRepository(session).list_page(page=page, channel=channel, journey_stage=journey_stage)
    return keyset.cut(rows, BY_KEY, page)


def interaction_id_for(payload: InteractionRecorded, event_source: str, event_id: str) -> uuid.UUID:
    """The interaction's own id, or one derived from the event (a redelivery gets the same)."""
    return payload.interaction_id or uuid.uuid5(_EVENT_NAMESPACE, f"{event_source}\n{event_id}")


def _recipient(
    payload: InteractionRecorded, by_id: Mapping[uuid.UUID, ProfileFacts], by_email: Mapping[str, ProfileFacts]
) -> Recipient:
    """The customer an interaction is about: by id (a merged duplicate's survivor), else by
    email; an address nobody was announced with stays a bare address."""
    if payload.customer_id is not None:
        profile = by_id.get(payload.customer_id)
        customer_id = payload.customer_id
        seen: set[uuid.UUID] = set()
        while profile is not None and profile.merged_into is not None and customer_id not in seen:
            seen.add(customer_id)
            customer_id = profile.merged_into
            profile = by_id.get(customer_id)
        return Recipient(customer_id=customer_id, email=None, profile=profile)
    # Found by the address normalized as the CRM stores one (as the event was decoded): the key
    # of a customer the CRM announces with it, or makes from this very event. The address to
    # write to stays as it was sent.
    assert payload.customer_email is not None and payload.customer_address is not None
    recipient = Recipient(
        customer_id=None, email=payload.customer_email.strip(), profile=None, normalized_email=payload.customer_address
    )
    profile = by_email.get(recipient.email_lower)
    if profile is not None:
        return Recipient(customer_id=profile.id, email=None, profile=profile)
    return recipient


async def record_interactions(session: AsyncSession, deliveries: list[Delivery]) -> list[StoredInteraction]:
    """Store a run of `interaction.recorded` events with a few statements: one query for the
    customers by id (and one for their survivors, if any was merged), one by email, one
    `INSERT ... SELECT FROM unnest(...)`. An interaction already stored is skipped; an erased
    customer's is stored without its summary, metadata or address. Returns the run's
    interactions (each once, in event order), stored now or before: the survey triggers judge
    each (survey, interaction) pair once by themselves.

    The customers' profiles are held until the transaction ends (`profiles_by_ids`): an erasure
    or a merge of one under way is waited for and seen (stored without personal data, or for the
    survivor), and one that comes later waits for these rows and then reaches them."""
    payloads: list[tuple[Delivery, InteractionRecorded]] = [(d, d.payload) for d in deliveries]
    # What the decoder could not judge without writing the JSON (the same rule as the CRM's).
    metadata_json = [storable_json(p.metadata, "metadata", MAX_JSON_BYTES).decode() for _, p in payloads]
    emails = {email_key(p.customer_address) for _, p in payloads if p.customer_address is not None}
    # The customer consumer links rows kept under an address when the CRM announces it; the
    # same lock on both sides makes one of the two transactions see the other's rows.
    await lock_keys(session, "email", emails)
    conn = await session_connection(session)
    by_id: dict[uuid.UUID, ProfileFacts] = dict(
        await profiles_by_ids(conn, {p.customer_id for _, p in payloads if p.customer_id is not None})
    )
    survivors = {p.merged_into for p in by_id.values() if p.merged_into is not None} - set(by_id)
    while survivors:  # one round but for a survivor merged away meanwhile (waited for above)
        found = await profiles_by_ids(conn, survivors)
        by_id |= found
        survivors = {p.merged_into for p in found.values() if p.merged_into is not None} - set(by_id)
    by_email: dict[str, ProfileFacts] = (
        dict(await CustomerProfileRepository(session).by_emails(emails, hold=True)) if emails else {}
    )
    columns: tuple[list[Any], ...] = tuple([] for _ in BATCH_COLUMNS)
    (
        row_ids,
        interaction_ids,
        customer_ids,
        addresses,
        addresses_lower,
        touchpoints,
        types,
        channels,
        occurred,
        summaries,
        amounts,
        currencies,
        metadata,
        sources,
    ) = columns
    stored: list[StoredInteraction] = []
    seen: set[uuid.UUID] = set()
    for (delivery, payload), details in zip(payloads, metadata_json, strict=True):
        interaction_id = interaction_id_for(payload, delivery.event.source, delivery.event.id)
        if interaction_id in seen:
            continue
        seen.add(interaction_id)
        recipient = _recipient(payload, by_id, by_email)
        erased = recipient.profile is not None and recipient.profile.erased_at is not None
        interaction_ids.append(interaction_id)
        customer_ids.append(recipient.customer_id)
        addresses.append(recipient.email)
        addresses_lower.append(recipient.email_lower)
        touchpoints.append(payload.touchpoint)
        types.append(payload.type)
        channels.append(payload.channel)
        occurred.append(payload.occurred_at)
        summaries.append(None if erased else payload.summary)
        amounts.append(payload.amount)
        currencies.append(payload.currency)
        metadata.append("{}" if erased else details)
        sources.append(delivery.event.source[:255])
        stored.append(
            StoredInteraction(
                interaction_id=interaction_id,
                type=payload.type,
                touchpoint=payload.touchpoint,
                occurred_at=payload.occurred_at,
                recipient=recipient,
            )
        )
    row_ids.extend(new_ids(len(interaction_ids)))
    await insert_interaction_batch(conn, columns, utcnow())
    return stored


async def reset_projection(session: AsyncSession) -> None:
    """Before a replay rebuilds the interactions from the topic: those it can rebuild go."""
    await TouchpointRepository(session).delete_rebuildable_interactions()
