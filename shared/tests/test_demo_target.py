"""Where `crm seed-demo` / `make demo` look for the stack: where `make run` put it."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from cxkit.demo import DEV_PORTS, DemoError, dev_port, target_from

ROOT = Path(__file__).resolve().parents[2]
VARIABLES = ("CRM_URL", "CEM_URL", "KAFKA_BOOTSTRAP", "API_KEY", *DEV_PORTS)


@pytest.fixture(autouse=True)
def _no_stack_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _where(target: object) -> tuple[str, str, str, str]:
    return target.crm_url, target.cem_url, target.kafka_bootstrap, target.api_key  # type: ignore[attr-defined]


def _make_run_ports() -> list[int]:
    """The ports scripts/dev_run.py (`make run`) serves the two services on, read as it starts."""
    return [port for _, _, port in runpy.run_path(str(ROOT / "scripts" / "dev_run.py"))["SERVICES"]]


def test_the_demo_finds_make_runs_stack_on_its_default_ports_and_key(tmp_path: Path) -> None:
    (tmp_path / "dev-api-key").write_text("cx_dev_abc\n")
    assert _where(target_from(tmp_path)) == (
        "http://127.0.0.1:8001",
        "http://127.0.0.1:8002",
        "127.0.0.1:9092",
        "cx_dev_abc",
    )
    assert _make_run_ports() == [8001, 8002]  # where `make run` serves when no variable moves it


def test_the_port_variables_move_make_run_and_the_demo_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_PORT", "18001")
    monkeypatch.setenv("CEM_PORT", "18002")
    monkeypatch.setenv("KAFKA_PORT", "19092")
    monkeypatch.setenv("API_KEY", "cx_given")
    assert _where(target_from(tmp_path)) == (
        "http://127.0.0.1:18001",
        "http://127.0.0.1:18002",
        "127.0.0.1:19092",
        "cx_given",
    )
    assert _make_run_ports() == [18001, 18002]
    assert dev_port("KAFKA_PORT") == 19092


def test_urls_and_arguments_win_over_the_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_PORT", "18001")
    monkeypatch.setenv("CEM_URL", "http://cem.internal:8002")
    target = target_from(tmp_path, crm_url="http://crm.internal", api_key="cx_arg", kafka_bootstrap="kafka:9092")
    assert _where(target) == (
        "http://crm.internal",
        "http://cem.internal:8002",
        "kafka:9092",
        "cx_arg",
    )


def test_no_key_anywhere_says_to_start_the_stack(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="make run"):
        target_from(tmp_path)
