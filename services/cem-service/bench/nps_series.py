"""Weekly NPS over 1,000,000 responses on PostgreSQL (SPEC target: <= 300 ms).

Builds a throw-away database with the migrations, loads the rows with one INSERT ... SELECT,
then times `GET /v1/analytics/nps?interval=week` through the app (in process, no network).
Run: .venv/bin/python services/cem-service/bench/nps_series.py [rows]"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import asyncpg
import httpx

from cem.cli import ALEMBIC_INI
from cem.config import CEMSettings
from cem.db import ApiKey
from cem.main import create_app
from cxkit import testing

SURVEY = "00000000-0000-4000-8000-000000000001"
LOAD = """
INSERT INTO surveys (id, name, kind, status, metric, questions, version, created_at, updated_at)
VALUES ($1, 'Bench NPS', 'nps', 'active', 'nps', '[]', 1, now(), now());
"""
ROWS = """
WITH src AS (
  SELECT i, md5(i::text)::uuid AS id, timestamptz '2025-01-01' + i * interval '30 seconds' AS at,
         CASE WHEN i % 50 = 0 THEN NULL ELSE i % 11 END AS score,
         CASE WHEN i % 5 = 0 THEN 'checkout' ELSE 'delivery' END AS touchpoint
  FROM generate_series(1, $2::int) i
), r AS (
  INSERT INTO responses (id, survey_id, source, answers, touchpoint, submitted_at, recorded_at)
  SELECT id, $1, 'api', '[]', touchpoint, at, now() FROM src
)
INSERT INTO scores (response_id, survey_id, metric, touchpoint, score, scale_min, scale_max, category, submitted_at, submitted_on)
SELECT id, $1, 'nps', touchpoint, score, 0, 10,
       CASE WHEN score IS NULL THEN NULL WHEN score >= 9 THEN 'promoter' WHEN score >= 7 THEN 'passive' ELSE 'detractor' END,
       at, (at AT TIME ZONE 'UTC')::date
FROM src
"""


async def main(rows: int) -> None:
    name, url = await testing.migrated_database("cem_bench", ALEMBIC_INI)
    try:
        conn = await asyncpg.connect(testing.database_dsn(name))
        started = time.perf_counter()
        await conn.execute(LOAD.replace("$1", f"'{SURVEY}'"))
        await conn.execute(ROWS, SURVEY, rows)
        await conn.execute("VACUUM ANALYZE scores")
        await conn.close()
        print(f"loaded {rows:,} responses in {time.perf_counter() - started:.1f} s")
        app = create_app(CEMSettings(database_url=url, run_relay=False, run_consumers=False, log_json=False))
        async with app.router.lifespan_context(app):
            keys = await testing.make_keys(app.state.session_factory, ApiKey)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://cem", headers=testing.bearer(keys["read"])) as c:
                for label, params in [
                    ("all answers", {}),
                    ("one survey", {"survey_id": SURVEY}),
                    ("one touchpoint", {"touchpoint": "checkout"}),
                ]:
                    times = []
                    for _ in range(7):
                        t = time.perf_counter()
                        r = await c.get("/v1/analytics/nps", params={"interval": "week", **params})
                        times.append((time.perf_counter() - t) * 1000)
                        r.raise_for_status()
                    body = r.json()
                    print(
                        f"weekly NPS, {label}: n={body['n']:,} skipped={body['skipped']:,} points={len(body['series'])} "
                        f"median {statistics.median(times[1:]):.0f} ms, max {max(times[1:]):.0f} ms (first {times[0]:.0f} ms)"
                    )
    finally:
        await testing.drop_database(name)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
