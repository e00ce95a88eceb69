"""``deploy/``'s Grafana dashboard and Prometheus rules: they load, every panel and rule is complete, and
every metric they name is exported by a running stack (the embedded stack, after the demo's scenarios).

The embedded stack runs in this process and its ``/metrics`` serves the default registry, so the scrape
is ``generate_latest()`` of that registry, parsed as Prometheus would.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from devstack.demo import run_scenarios
from devstack.stack import Ports, dev_stack

pytestmark = pytest.mark.timeout(240)

DEPLOY = Path(__file__).parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "mpp-wallet.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"

METRIC_NAME = re.compile(r"\b(?:mpp|temporal)_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
SEVERITIES = {"warning", "critical"}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested (collapsed) panels included."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in _panels(_dashboard()["panels"]) for target in panel.get("targets", [])]


def _alert_exprs() -> list[str]:
    return [str(rule["expr"]) for rule in _rules()]


def _balanced(expr: str) -> bool:
    depth: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):  # label values may hold any bracket
        if char in "([{":
            depth.append(char)
        elif char in pairs and (not depth or depth.pop() != pairs[char]):
            return False
    return not depth


# (a) the dashboard


def test_dashboard_loads_with_its_variables() -> None:
    dashboard = _dashboard()
    assert dashboard["title"]
    assert dashboard["uid"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert {"job", "instance"} <= set(variables)


def test_dashboard_has_the_rows() -> None:
    rows = [panel["title"] for panel in _panels(_dashboard()["panels"]) if panel["type"] == "row"]
    assert rows == ["API", "Payments", "Deliveries", "NFC", "Temporal worker"]


def test_every_panel_has_a_title_and_queries() -> None:
    panels = [panel for panel in _panels(_dashboard()["panels"]) if panel["type"] != "row"]
    assert len(panels) >= 20
    for panel in panels:
        assert panel.get("title"), panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target.get("expr"), panel["title"]
            assert _balanced(target["expr"]), (panel["title"], target["expr"])
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"]), panel["title"]
    assert len({panel["id"] for panel in _panels(_dashboard()["panels"])}) == len(list(_panels(_dashboard()["panels"])))


# (b) the alert rules and the example Prometheus config


def test_every_rule_is_complete() -> None:
    rules = _rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), names
    assert len(rules) >= 7
    for rule in rules:
        assert rule.get("expr"), rule["alert"]
        assert _balanced(str(rule["expr"])), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        assert rule["annotations"]["runbook"], rule["alert"]


def test_the_issue_s_alerts_are_there() -> None:
    exprs = " ".join(_alert_exprs())
    for name in (
        "mpp_oldest_undelivered_notification_age_seconds",
        "mpp_payments_finished_total",
        "temporal_workflow_task_schedule_to_start_latency_bucket",
        "mpp_signature_failures_total",
        "mpp_credential_events_total",
        'mpp_deliveries_finished_total{outcome="REJECTED"}',
    ):
        assert name in exprs, name
    severities = {rule["labels"]["severity"] for rule in _rules()}
    assert severities == SEVERITIES


def test_example_prometheus_config_loads_the_rules() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"mpp-api", "mpp-worker"} <= set(jobs)
    for job in jobs.values():
        assert job["static_configs"][0]["targets"], job["job_name"]


# (c) every metric named is exported by a running stack


@pytest.fixture(scope="module")
async def exported_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every metric and sample name the stack's /metrics shows after the demo (a labelled family with
    no sample yet still shows its HELP and TYPE lines)."""
    async with dev_stack(var_dir=tmp_path_factory.mktemp("deploy"), ports=Ports.free(), web_ui=False) as stack:
        await run_scenarios(stack, Console(file=io.StringIO()))
        text = generate_latest().decode()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in HISTOGRAM_SUFFIXES)
    return names


def _referenced(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}


def test_files_name_metrics() -> None:
    assert len(_referenced(_dashboard_exprs())) >= 20
    assert len(_referenced(_alert_exprs())) >= 5


@pytest.mark.parametrize(
    ("source", "exprs"), [("dashboard", _dashboard_exprs), ("alerts", _alert_exprs)], ids=["dashboard", "alerts"]
)
def test_every_metric_named_is_exported(source: str, exprs: Any, exported_names: set[str]) -> None:
    missing = sorted(_referenced(exprs()) - exported_names)
    assert not missing, f"{source} names metrics the stack does not export: {missing}"
