"""The bench's knobs: what a run seeds follows what it measures."""

from __future__ import annotations

import pytest
from scripts.bench.config import BenchConfig


@pytest.mark.parametrize(
    ("only", "responses", "seeded"),
    [
        (None, None, 1_000_000),  # every scenario, the NPS series among them
        ("nps_series,search", None, 1_000_000),
        ("import_customers", None, 0),  # no scenario reads the answers: a minute of seeding saved
        ("get_customer, post_interactions", None, 0),
        ("import_customers", "5000", 5000),  # said outright, it is what is seeded
        (None, "2000", 2000),
    ],
)
def test_the_million_answers_are_seeded_only_for_a_run_that_measures_the_nps_series(
    monkeypatch: pytest.MonkeyPatch, only: str | None, responses: str | None, seeded: int
) -> None:
    for name, value in (("BENCH_ONLY", only), ("BENCH_RESPONSES", responses)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    cfg = BenchConfig()
    assert cfg.responses == seeded
    assert cfg.only == tuple(n.strip() for n in (only or "").split(",") if n.strip())
