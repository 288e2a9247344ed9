"""What `crm replay` rebuilds from the topics: the experience projection from `cem.feedback.v1`.

The replay records its progress as `<live consumer>.replay` (cxkit.replay), so the live consumer
still applies, with its side effects, any event it had not reached itself; the replay's own
handlers make no task for a follow-up."""

from __future__ import annotations

from crm.config import CRMSettings
from crm.consumers import cem_feedback
from crm.experience import service as experience
from cxkit.events.registry import CEM_FEEDBACK
from cxkit.replay import Projection


def projections(settings: CRMSettings) -> list[Projection]:
    return [
        Projection(
            consumer_name=cem_feedback.consumer_name(settings),
            topics=[CEM_FEEDBACK],
            handlers=cem_feedback.projection_handlers(),
            reset=experience.reset_projection,
            description="survey invitations, suppressions, answers, feedback and follow-up requests per customer "
            "(customer view and timeline); follow-up tasks are kept, never made again",
        )
    ]
