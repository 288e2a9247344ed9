"""The CRM's live consumers (built in `crm.main.build_consumers`)."""

from __future__ import annotations

from crm.config import CRMSettings
from crm.consumers import cem_feedback, interactions
from cxkit.events.registry import CEM_FEEDBACK, CX_INTERACTIONS


def live_consumers(settings: CRMSettings) -> dict[str, list[str]]:
    """Each live consumer's name and the topics it reads (what `crm dlq` looks at)."""
    return {interactions.consumer_name(settings): [CX_INTERACTIONS], cem_feedback.consumer_name(settings): [CEM_FEEDBACK]}
