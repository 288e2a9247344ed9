"""The CRM's customer data: each domain whose rows belong to a customer, with the tables it
covers, in the order merges and erasures visit them; and the other answers the customers domain
asks of the domains above it (`crm.customers.lifecycle`). Composed here, once, and handed in by
`crm.main` (the app's state, read by the customers router), so that `crm.customers` imports no
other domain.

A new table that belongs to a customer joins by its repository's `repoint_customer` and
`erase_customer` and a line here; `tests/test_customer_data.py` fails until it does."""

from __future__ import annotations

from crm.campaigns.repository import CampaignRepository, campaign_exists
from crm.config import CRMSettings
from crm.customers.lifecycle import CustomerErasure, OtherDomains
from crm.deals.repository import DealRepository, open_value_query
from crm.documents.repository import DocumentRepository
from crm.documents.storage import DocumentStore
from crm.experience.repository import ExperienceRepository
from crm.interactions.repository import InteractionRepository
from crm.leads.repository import LeadRepository
from crm.tasks.repository import TaskRepository
from cxkit.lifecycle import CustomerDataRegistry


def customer_data() -> CustomerDataRegistry[CustomerErasure]:
    """The domains in the order a merge always visited them (an erasure visited them in another,
    but its statements touch a table each and depend on none of the others)."""
    registry = CustomerDataRegistry[CustomerErasure]()
    # The interaction statistics follow the interactions: the database's triggers recompute them.
    registry.register("interactions", InteractionRepository, tables=["interactions", "customer_interaction_stats"])
    registry.register("deals", DealRepository, tables=["deals"])
    registry.register("tasks", TaskRepository, tables=["tasks"])
    registry.register("documents", DocumentRepository, tables=["documents"])
    registry.register("campaigns", CampaignRepository, tables=["campaign_members"])
    registry.register("leads", LeadRepository, tables=["leads"])
    registry.register("experience", ExperienceRepository, tables=["experience_events"])
    return registry


def other_domains(settings: CRMSettings) -> OtherDomains:
    return OtherDomains(
        customer_data=customer_data(),
        stored_files=DocumentStore(settings.documents_dir),
        open_deal_value=open_value_query,
        campaigns=CampaignRepository,
        campaign_exists=campaign_exists,
    )
