"""One module per SPEC §6 target (or group of them). Each measures the product and, where there
is one, its baseline, interleaved round by round (ours, baseline, ours, baseline...), and adds
the median figures to the report (every round's figures go to `report.rounds`)."""

from scripts.bench.scenarios.context import BenchContext, checkpoint, memory
from scripts.bench.scenarios.customer_import import import_customers
from scripts.bench.scenarios.heavy_customer import heavy_customer
from scripts.bench.scenarios.http_api import (
    customer_view,
    duplicates,
    get_customer,
    nps_series,
    open_deals,
    open_tasks,
    post_interactions,
    search,
    sorted_lists,
)
from scripts.bench.scenarios.ingest import ingest
from scripts.bench.scenarios.write_visible import write_visible

__all__ = [
    "BenchContext",
    "checkpoint",
    "customer_view",
    "duplicates",
    "get_customer",
    "heavy_customer",
    "import_customers",
    "ingest",
    "memory",
    "nps_series",
    "open_deals",
    "open_tasks",
    "post_interactions",
    "search",
    "sorted_lists",
    "write_visible",
]
