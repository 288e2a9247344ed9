"""The CEM's live consumers (built in `cem.main.build_consumers`)."""

from __future__ import annotations

from cem.config import CEMSettings
from cem.consumers import crm_customers, interactions
from cxkit.events.registry import CRM_CUSTOMERS, CX_INTERACTIONS


def live_consumers(settings: CEMSettings) -> dict[str, list[str]]:
    """Each live consumer's name and the topics it reads (what `cem dlq` looks at)."""
    return {crm_customers.consumer_name(settings): [CRM_CUSTOMERS], interactions.consumer_name(settings): [CX_INTERACTIONS]}
