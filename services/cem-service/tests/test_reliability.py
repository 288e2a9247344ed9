"""Issue 9 on the CEM: respondent tokens (`/r/<token>`: whoever holds one answers for the
customer) never reach the access line or a metric label, and PostgreSQL away means 503 with
Retry-After, one log line per failure, and recovery without a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client import generate_latest
from sqlalchemy.engine import make_url

from cem.config import CEMSettings
from cem.db import ApiKey
from cem.main import create_app
from cxkit import testing
from cxkit.logs import ACCESS_LOG


async def test_respondent_tokens_stay_out_of_access_lines_and_metric_labels(
    client: httpx.AsyncClient, make: Any, tmp_path: Path
) -> None:
    survey = await make.survey("nps")
    token = (await make.invitation(survey["id"]))["token"]
    saved = (ACCESS_LOG.service, ACCESS_LOG.json, ACCESS_LOG.enabled, ACCESS_LOG.fd)
    target = tmp_path / "access.jsonl"
    with target.open("w") as stream:
        ACCESS_LOG.configure("cem-service", json=True, enabled=True, fd=stream.fileno())
        try:
            page = await client.get(f"/r/{token}", params={"score": "9"}, headers={"Authorization": ""})
            answer = await client.post(f"/r/{token}", data={"q_nps": "9"}, headers={"Authorization": ""})
            unknown = await client.get("/r/not-a-real-token-but-still-secret", headers={"Authorization": ""})
        finally:
            ACCESS_LOG.service, ACCESS_LOG.json, ACCESS_LOG.enabled, ACCESS_LOG.fd = saved
    assert page.status_code == 200 and unknown.status_code == 404
    assert answer.status_code in (200, 422), answer.text  # recorded, or the form asked for more
    text = target.read_text()
    assert token not in text and "still-secret" not in text
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert [line["path"] for line in lines] == ["/r/[redacted]"] * 3
    metrics = generate_latest().decode()
    assert token not in metrics and "still-secret" not in metrics
    assert 'route="/r/{token}"' in metrics


async def test_database_away_answers_503_and_the_service_recovers(
    cem_settings: CEMSettings, client: httpx.AsyncClient, make: Any
) -> None:
    survey = await make.survey("nps")
    token = (await make.invitation(survey["id"]))["token"]
    url = make_url(cem_settings.database_url)
    proxy = testing.TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    settings = cem_settings.model_copy(update={"database_url": url.set(port=proxy.port).render_as_string(hide_password=False)})
    app = create_app(settings)
    requests = [("GET", "/v1/surveys?limit=5"), ("GET", f"/v1/surveys/{survey['id']}"), ("GET", f"/r/{token}")]
    async with app.router.lifespan_context(app):
        keys = await testing.make_keys(app.state.session_factory, ApiKey)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cem", headers=testing.bearer(keys["read"])) as c:
            assert [(await c.request(m, p)).status_code for m, p in requests] == [200, 200, 200]
            with testing.collected_logs() as logs:
                await proxy.cut()
                answers = [await c.request(m, p) for _ in range(2) for m, p in requests]
                ready = await c.get("/ready")
            for answer in answers:
                assert answer.status_code == 503, (answer.request.url, answer.text)
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.headers["retry-after"] == "5"
            assert ready.status_code == 503 and ready.json()["checks"]["database"] != "ok"
            assert [r.getMessage() for r in logs.records] == ["database unavailable"] * len(answers)
            assert all(r.exc_info is None for r in logs.records)
            assert all(token not in r.__dict__["path"] for r in logs.records)  # the respondent path is redacted

            await proxy.start()
            assert [(await c.request(m, p)).status_code for m, p in requests] == [200, 200, 200]
            assert (await c.get("/ready")).status_code == 200
    await proxy.cut()
