"""Whom an interaction concerns and an invitation would go to: written by the touchpoints when
they store an interaction, read by the invitation rules (`cem.triggers`) when they judge one."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from cem.customers.models import email_key

RecipientKey = tuple[str, Any]


class ProfileFacts(Protocol):
    """What the rules read of a customer's profile: a `CustomerProfile` row, or the few columns
    a consumer's batch reads (`cem.touchpoints.repository.ProfileRow`)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def email(self) -> str | None: ...
    @property
    def survey_opt_out(self) -> bool: ...
    @property
    def erased_at(self) -> dt.datetime | None: ...
    @property
    def merged_into(self) -> uuid.UUID | None: ...


@dataclass(frozen=True)
class Recipient:
    """Who would be invited: a customer (known here or not yet), or a bare address."""

    customer_id: uuid.UUID | None
    email: str | None
    profile: ProfileFacts | None
    # The address as the email library normalizes it (the domain in Unicode, NFC), when `email`
    # is kept as it was written (an interaction's `customer_email`): its lower-cased form is the
    # key, as for every address the API takes (validated, so normalized) and the CRM announces.
    normalized_email: str | None = None

    @property
    def email_lower(self) -> str | None:
        """The key an address is found by (the customer the CRM announces with it, a throttle)."""
        if self.normalized_email is not None:
            return email_key(self.normalized_email)
        return email_key(self.email) if self.email else None

    @property
    def key(self) -> RecipientKey:
        return ("customer", self.customer_id) if self.customer_id is not None else ("email", self.email_lower)

    @property
    def address(self) -> str | None:
        """The address the link goes to: the one given, else the one the CRM announced."""
        return self.email or (self.profile.email if self.profile else None)
