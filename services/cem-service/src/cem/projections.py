"""What `cem replay` rebuilds from the topics: the customer projection (from
`crm.customers.v1`) and the interactions heard on `cx.interactions.v1`. A replay runs the
projection handlers only: it never makes invitations, suppressions or follow-ups."""

from __future__ import annotations

from cem.config import CEMSettings
from cem.consumers import crm_customers, interactions
from cem.customer_data import customer_data
from cem.customers import service as customers
from cem.touchpoints import service as touchpoints
from cxkit.events.registry import CRM_CUSTOMERS, CX_INTERACTIONS
from cxkit.replay import Projection


def projections(settings: CEMSettings) -> list[Projection]:
    """Customers first: interactions are then linked to the customers as announced."""
    return [
        Projection(
            consumer_name=crm_customers.consumer_name(settings),
            topics=[CRM_CUSTOMERS],
            handlers=crm_customers.projection_handlers(customer_data()),
            reset=customers.reset_projection,
            description="customer profiles: snapshots, merges, erasures, open deal values, lead conversions, "
            "follow-ups closed by CRM tasks",
        ),
        Projection(
            consumer_name=interactions.consumer_name(settings),
            topics=[CX_INTERACTIONS],
            handlers=interactions.projection_handlers(),
            reset=touchpoints.reset_projection,
            description="touchpoint interactions (rows only, no survey triggers)",
        ),
    ]
