"""Imports every model so `Base.metadata` is complete (Alembic and tests use this)."""

from cem.customers.models import CustomerExperienceTotals, CustomerProfile
from cem.db import ApiKey, Base, IdempotencyKey, OutboxMessage, ProcessedEvent, WebhookDelivery, WebhookSubscription
from cem.feedback.models import Feedback
from cem.followups.models import Followup
from cem.invitations.models import Invitation, InvitationLink
from cem.journeys.models import Journey, JourneyStage, JourneyStep
from cem.responses.models import AnswerDay, Score, ScoreDay, SurveyResponse
from cem.suppressions.models import Suppression
from cem.surveys.models import Survey
from cem.touchpoints.models import Touchpoint, TouchpointInteraction

__all__ = [
    "AnswerDay",
    "ApiKey",
    "Base",
    "CustomerExperienceTotals",
    "CustomerProfile",
    "Feedback",
    "Followup",
    "IdempotencyKey",
    "Invitation",
    "InvitationLink",
    "Journey",
    "JourneyStage",
    "JourneyStep",
    "OutboxMessage",
    "ProcessedEvent",
    "Score",
    "ScoreDay",
    "Suppression",
    "Survey",
    "SurveyResponse",
    "Touchpoint",
    "TouchpointInteraction",
    "WebhookDelivery",
    "WebhookSubscription",
]
