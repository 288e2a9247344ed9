"""Imports every model so `Base.metadata` is complete (Alembic and tests use this)."""

from crm.campaigns.models import Campaign, CampaignMember
from crm.customers.models import Customer
from crm.db import ApiKey, Base, IdempotencyKey, OutboxMessage, ProcessedEvent, WebhookDelivery, WebhookSubscription
from crm.deals.models import Deal, DealStageChange
from crm.documents.models import Document
from crm.experience.models import ExperienceEvent
from crm.imports.models import ImportJob, ImportJobError, ImportJobPart
from crm.interactions.models import Interaction
from crm.leads.models import Lead
from crm.pipelines.models import Pipeline, PipelineStage
from crm.tasks.models import Task

__all__ = [
    "ApiKey",
    "Base",
    "Campaign",
    "CampaignMember",
    "Customer",
    "Deal",
    "DealStageChange",
    "Document",
    "ExperienceEvent",
    "IdempotencyKey",
    "ImportJob",
    "ImportJobError",
    "ImportJobPart",
    "Interaction",
    "Lead",
    "OutboxMessage",
    "Pipeline",
    "PipelineStage",
    "ProcessedEvent",
    "Task",
    "WebhookDelivery",
    "WebhookSubscription",
]
