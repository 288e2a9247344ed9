"""The CEM's customer data: each domain whose rows belong to a customer, with the tables it
covers, in the order merges and erasures visit them. Composed here, once, and handed to the
customers domain by whoever applies a merge or an erasure (the consumers built in `cem.main`,
the replay's projections), so that `cem.customers` imports no other domain.

A new table with a `customer_id` joins by its repository's `repoint_customer` and
`erase_customer` and a line here; `tests/test_customer_data.py` fails until it does."""

from __future__ import annotations

import functools

from cem.customers.lifecycle import CustomerErasure
from cem.feedback.service import FeedbackData
from cem.followups.repository import FollowupRepository
from cem.invitations.repository import InvitationRepository
from cem.responses.service import LateFollowups, ResponseData
from cem.suppressions.repository import SuppressionRepository
from cem.touchpoints.repository import TouchpointRepository
from cxkit.http.data_export import Section
from cxkit.lifecycle import CustomerDataRegistry


def customer_data(late_followups: LateFollowups | None = None) -> CustomerDataRegistry[CustomerErasure]:
    """The domains in the order the merge and the erasure always visited them. Those that keep
    rows under an address until the CRM announces its owner (invitations, answers and their
    scores, feedback, interactions, suppressions) also link them then
    (`cem.customers.lifecycle.AddressLinks`); answers and feedback are announced again, with
    their customer, for the CRM, and recent detractor answers are followed up with
    `late_followups` (the service's; a replay passes none)."""
    registry = CustomerDataRegistry[CustomerErasure]()
    registry.register("invitations", InvitationRepository, tables=["invitations"])
    registry.register("responses", functools.partial(ResponseData, late_followups=late_followups), tables=["responses", "scores"])
    registry.register("followups", FollowupRepository, tables=["followups"])
    registry.register("feedback", FeedbackData, tables=["feedback"])
    registry.register("touchpoints", TouchpointRepository, tables=["touchpoint_interactions"])
    registry.register("suppressions", SuppressionRepository, tables=["suppressions", "survey_opt_outs"])
    return registry


# The customer's rows: by their id, and those kept under their address before the CRM announced
# them (the rows an erasure also finds by the address), by the `email_key` each table stores
# (never lower() in SQL: it folds some letters otherwise than the key).
_MINE = "(customer_id = $1 OR (customer_id IS NULL AND {address} = (SELECT email_lower FROM customer_profiles WHERE id = $1)))"


def _of_customer(table: str, order: str, address: str | None = None) -> Section:
    where = _MINE.format(address=address) if address else "customer_id = $1"
    return Section(table, f"SELECT * FROM {table} WHERE {where} ORDER BY {order}")


def export_sections() -> list[Section]:
    """What a data export (`GET /v1/customers/{id}/data-export`) reads: the customer as the CRM
    announced it (and the duplicates merged into it), their experience totals, and every table
    the registry names."""
    return [
        Section("customer_profiles", "SELECT * FROM customer_profiles WHERE id = $1 OR merged_into = $1 ORDER BY id"),
        _of_customer("customer_experience_totals", "customer_id"),
        _of_customer("invitations", "created_at, id", "email_lower"),
        _of_customer("responses", "submitted_at, id", "email_lower"),
        _of_customer("scores", "submitted_at, response_id"),
        _of_customer("followups", "created_at, id"),
        _of_customer("feedback", "received_at, id", "email_lower"),
        _of_customer("touchpoint_interactions", "occurred_at, id", "email_lower"),
        _of_customer("suppressions", "created_at, id", "email_lower"),
        _of_customer("survey_opt_outs", "created_at, id"),
    ]
