"""deploy/prometheus/alerts.yml and deploy/grafana/dashboard.json ask only for what the services
export: every metric an expression names is on a service's /metrics (or is Prometheus's own
`up`), and every route an alert watches is a route template of the CRM's API. No promtool
here, so the rules file is checked as YAML of the rule-file shape."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml

from cem.main import create_app as create_cem
from crm.main import create_app as create_crm

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROMETHEUS_OWN = {"up"}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "deriv", "delta", "histogram_quantile",
    "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "bool", "offset", "time", "abs", "absent",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_NAME = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    bare = _RANGE.sub("", _GROUPING.sub("", _MATCHERS.sub("", _STRING.sub('""', expr))))
    return {name for name in _NAME.findall(bare) if name not in PROMQL_WORDS}


async def exported() -> set[str]:
    """Every series name the services' /metrics can show (a histogram's _bucket/_count/_sum)."""
    names = set(PROMETHEUS_OWN)
    for app in (create_crm(), create_cem()):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            text = (await client.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split()
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"} if kind == "histogram" else {name}
    return names


def alert_rules() -> list[dict[str, object]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert all(set(group) <= {"name", "rules", "interval"} for group in doc["groups"])
    return rules


async def test_alert_rules_name_only_exported_metrics_and_real_routes() -> None:
    rules = alert_rules()
    names = await exported()
    crm_routes = set(create_crm().openapi()["paths"])
    assert {"ServiceDown", "HighServerErrorRate", "OutboxOldestUnsentTooOld", "ConsumerLagGrowing", "MessagesDeadLettered"} <= {
        str(r["alert"]) for r in rules
    }
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", "0s"))), rule
        expr = str(rule["expr"])
        assert metric_names(expr) and metric_names(expr) <= names, (rule["alert"], metric_names(expr) - names)
        for route in re.findall(r'route="([^"]+)"', expr):
            assert route in crm_routes, (rule["alert"], route)
    assert metric_names('sum by (job, le) (rate(x_bucket{route="/a/{b}"}[5m])) and y > 0.025') == {"x_bucket", "y"}


async def test_dashboard_panels_query_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    names = await exported()
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = metric_names(target["expr"])
            assert used and used <= names, (panel["title"], used - names)
            queried |= used
    alerted = set().union(*(metric_names(str(r["expr"])) for r in alert_rules()))
    assert alerted <= queried  # whatever can page someone has a panel
