"""Which topic carries which event type, and the payload model of each."""

from __future__ import annotations

from pydantic import BaseModel

from cxkit.events import payloads as p

CRM_CUSTOMERS = "crm.customers.v1"
CX_INTERACTIONS = "cx.interactions.v1"
CEM_FEEDBACK = "cem.feedback.v1"
TOPICS: tuple[str, ...] = (CRM_CUSTOMERS, CX_INTERACTIONS, CEM_FEEDBACK)

EVENT_TYPES: dict[str, tuple[str, type[BaseModel]]] = {
    "customer.created": (CRM_CUSTOMERS, p.CustomerCreated),
    "customer.updated": (CRM_CUSTOMERS, p.CustomerUpdated),
    "customer.merged": (CRM_CUSTOMERS, p.CustomerMerged),
    "customer.erased": (CRM_CUSTOMERS, p.CustomerErased),
    "lead.converted": (CRM_CUSTOMERS, p.LeadConverted),
    "deal.stage_changed": (CRM_CUSTOMERS, p.DealStageChanged),
    "task.completed": (CRM_CUSTOMERS, p.TaskCompleted),
    "task.overdue": (CRM_CUSTOMERS, p.TaskOverdue),
    "interaction.recorded": (CX_INTERACTIONS, p.InteractionRecorded),
    "survey.invited": (CEM_FEEDBACK, p.SurveyInvited),
    "survey.throttled": (CEM_FEEDBACK, p.SurveyThrottled),
    "survey.response.submitted": (CEM_FEEDBACK, p.SurveyResponseSubmitted),
    "feedback.received": (CEM_FEEDBACK, p.FeedbackReceived),
    "followup.requested": (CEM_FEEDBACK, p.FollowupRequested),
    "survey.reminded": (CEM_FEEDBACK, p.SurveyReminded),
    "followup.overdue": (CEM_FEEDBACK, p.FollowupOverdue),
    "survey.invitation_cancelled": (CEM_FEEDBACK, p.SurveyInvitationCancelled),
    "survey.opted_out": (CEM_FEEDBACK, p.SurveyOptedOut),
    "survey.opted_in": (CEM_FEEDBACK, p.SurveyOptedIn),
}


def payload_model(event_type: str) -> type[BaseModel] | None:
    entry = EVENT_TYPES.get(event_type)
    return entry[1] if entry else None


def topic_for(event_type: str) -> str:
    return EVENT_TYPES[event_type][0]


def event_types_on(topics: list[str]) -> list[str]:
    """The event types carried by `topics` (what a service producing them announces)."""
    return [event_type for event_type, (topic, _) in EVENT_TYPES.items() if topic in topics]


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"
