"""The CEM's customer data is one registry (`cem.customer_data`): every table with a customer
joins it, and merges and erasures walk the registry they are handed. That each registered
table's rows follow a merge and lose their personal data in an erasure is proven in
test_customer_events.py, over every table the registry names."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from cem.consumers import crm_customers
from cem.customer_data import customer_data
from cem.customers.lifecycle import CustomerErasure
from cem.models import Base
from cxkit.lifecycle import unregistered_tables

from .test_customer_events import erased, merged

# Kept by the customers domain itself: the experience totals are counted by database triggers
# from the registered tables' rows, so they follow a merge or an erasure with those rows.
KEPT_BY_CUSTOMERS = {"customer_experience_totals"}


def test_every_table_with_a_customer_id_is_registered_or_kept_by_the_customers_domain() -> None:
    registry = customer_data()
    assert unregistered_tables(Base.metadata, registry, handled=KEPT_BY_CUSTOMERS) == set()
    with_customer = {table.name for table in Base.metadata.sorted_tables if "customer_id" in table.c}
    assert registry.tables <= with_customer, registry.tables - with_customer  # no registration names a missing table


class Recorder:
    """A domain that records what the merge and the erasure hand it."""

    def __init__(self, calls: list[Any]) -> None:
        self.calls = calls

    async def repoint_customer(self, duplicate_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        self.calls.append(("repoint", duplicate_id, survivor_id))

    async def erase_customer(self, erasure: CustomerErasure) -> None:
        self.calls.append(("erase", erasure.customer_id, erasure.email_lower, sorted(erasure.unkeyed_ids)))


async def test_merges_and_erasures_walk_the_registry_the_consumer_was_built_with(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    calls: list[Any] = []
    registry = customer_data()
    registry.register("recorder", lambda session: Recorder(calls), tables=[])
    handlers = crm_customers.live_handlers(registry)

    async def apply(event: Any) -> None:
        async with session_factory() as session, session.begin():
            await handlers[event.event.type](session, [event])

    # Feedback under an address nobody is known by yet: the erasure links it to the customer,
    # and its id reaches the domains after feedback as an event to scrub by id.
    before = await client.post("/v1/feedback", json={"email": "Erin@Example.com", "channel": "chat", "text": "Slow"})
    assert before.status_code == 201 and before.json()["customer_id"] is None
    survivor = await make.customer(email="erin@example.com")
    duplicate = await make.customer()

    await apply(merged(survivor, duplicate, email="erin@example.com"))
    await apply(erased(survivor))

    feedback_id = uuid.UUID(before.json()["id"])
    assert calls == [("repoint", duplicate, survivor), ("erase", survivor, "erin@example.com", [feedback_id])]
    assert (await client.get(f"/v1/feedback/{feedback_id}")).json()["customer_id"] == str(survivor)
