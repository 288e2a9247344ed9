"""The CEM's customer data: each domain whose rows belong to a customer, with the tables it
covers, in the order merges and erasures visit them. Composed here, once, and handed to the
customers domain by whoever applies a merge or an erasure (the consumers built in `cem.main`,
the replay's projections), so that `cem.customers` imports no other domain.

A new table with a `customer_id` joins by its repository's `repoint_customer` and
`erase_customer` and a line here; `tests/test_customer_data.py` fails until it does."""

from __future__ import annotations

from cem.customers.lifecycle import CustomerErasure
from cem.feedback.repository import FeedbackRepository
from cem.followups.repository import FollowupRepository
from cem.invitations.repository import InvitationRepository
from cem.responses.repository import ResponseRepository
from cem.suppressions.repository import SuppressionRepository
from cem.touchpoints.repository import TouchpointRepository
from cxkit.lifecycle import CustomerDataRegistry


def customer_data() -> CustomerDataRegistry[CustomerErasure]:
    """The domains in the order the merge and the erasure always visited them. Those that keep
    rows under an address until the CRM announces its owner (invitations, interactions,
    suppressions) also link them then (`cem.customers.lifecycle.AddressLinks`)."""
    registry = CustomerDataRegistry[CustomerErasure]()
    registry.register("invitations", InvitationRepository, tables=["invitations"])
    registry.register("responses", ResponseRepository, tables=["responses", "scores"])
    registry.register("followups", FollowupRepository, tables=["followups"])
    registry.register("feedback", FeedbackRepository, tables=["feedback"])
    registry.register("touchpoints", TouchpointRepository, tables=["touchpoint_interactions"])
    registry.register("suppressions", SuppressionRepository, tables=["suppressions"])
    return registry
