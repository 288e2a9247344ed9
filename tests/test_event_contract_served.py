"""Both services serve the published event contract: the AsyncAPI document and one JSON
Schema per event type, identical to the files in shared/, with no key needed."""

from __future__ import annotations

import httpx
import pytest
import yaml

from cem.main import create_app as create_cem
from crm.main import create_app as create_crm
from cxkit.events.contract import SHARED_DIR
from cxkit.events.registry import EVENT_TYPES


@pytest.mark.parametrize("factory", [create_crm, create_cem], ids=["crm", "cem"])
async def test_service_serves_the_published_asyncapi_document_and_schemas(factory) -> None:  # type: ignore[no-untyped-def]
    app = factory()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        doc = await client.get("/asyncapi.yaml")
        assert doc.status_code == 200 and doc.headers["content-type"].startswith("application/yaml")
        assert doc.text == (SHARED_DIR / "asyncapi.yaml").read_text()
        assert yaml.safe_load(doc.text)["asyncapi"] == "3.0.0"
        for event_type in EVENT_TYPES:
            schema = await client.get(f"/schemas/events/{event_type}.json")
            assert schema.status_code == 200, event_type
            assert schema.content == (SHARED_DIR / "schemas" / f"{event_type}.json").read_bytes()
        missing = await client.get("/schemas/events/no.such.type.json")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
