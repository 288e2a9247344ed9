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
from crm.imports.repository import ImportErrorRepository
from crm.interactions.repository import InteractionRepository
from crm.leads.repository import LeadRepository
from crm.tasks.repository import TaskRepository
from cxkit.http.data_export import Section
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
    # Found by the customer's address, not their id: an erasure visits the domains before it
    # clears the record.
    registry.register("imports", ImportErrorRepository, tables=["import_job_errors"])
    return registry


def _of_customer(table: str, order: str) -> Section:
    return Section(table, f"SELECT * FROM {table} WHERE customer_id = $1 ORDER BY {order}")


def export_sections() -> list[Section]:
    """What a data export reads of the other domains: every table the registry names (the
    leads by the conversion or the customer's address, an import's refused rows by the address),
    and each deal's stage history."""
    return [
        _of_customer("interactions", "occurred_at, id"),
        _of_customer("customer_interaction_stats", "customer_id"),
        _of_customer("deals", "created_at, id"),
        Section(
            "deal_stage_changes",
            "SELECT c.* FROM deal_stage_changes c JOIN deals d ON d.id = c.deal_id WHERE d.customer_id = $1 "
            "ORDER BY c.deal_id, c.seq",
        ),
        _of_customer("tasks", "created_at, id"),
        _of_customer("documents", "created_at, id"),
        _of_customer("campaign_members", "added_at, id"),
        Section(
            "leads",
            "SELECT * FROM leads WHERE converted_customer_id = $1 "
            "OR email_normalized = (SELECT email_normalized FROM customers WHERE id = $1) ORDER BY created_at, id",
        ),
        _of_customer("experience_events", "occurred_at, id"),
        Section(
            "import_job_errors",
            "SELECT * FROM import_job_errors WHERE address_key = (SELECT email_normalized FROM customers WHERE id = $1) "
            "ORDER BY job_id, line",
        ),
    ]


def other_domains(settings: CRMSettings) -> OtherDomains:
    return OtherDomains(
        customer_data=customer_data(),
        stored_files=DocumentStore(settings.documents_dir),
        open_deal_value=open_value_query,
        campaigns=CampaignRepository,
        campaign_exists=campaign_exists,
        export_sections=export_sections(),
    )
