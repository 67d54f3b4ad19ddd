"""The alert rules (deploy/alerts.yml) and the Grafana dashboard (deploy/grafana) read only
metrics the API and the worker export. The Temporal SDK's metrics (temporal_*) exist only
once a worker runs; tests/integration/test_worker_metrics.py checks those on a live scrape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from activities import metrics
from api.metrics import Metrics
from tests.promql import metric_names, sample_names
from worker.metrics_server import worker_registry

ROOT = Path(__file__).resolve().parents[2]
ALERTS = yaml.safe_load((ROOT / "deploy/alerts.yml").read_text())
RULES = [rule for group in ALERTS["groups"] for rule in group["rules"]]
DASHBOARD = json.loads((ROOT / "deploy/grafana/dashboards/trading.json").read_text())
PANELS = [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]
SYNTHETIC = {"up"}  # written by Prometheus for every scrape target
SDK_PREFIX = "temporal_"


def exported() -> set[str]:
    api = sample_names(Metrics().registry.collect())
    worker = sample_names(worker_registry(None, None, None).collect())
    return api | worker | sample_names(metrics.describe_store())


def panel_expressions() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in PANELS for target in panel["targets"]]


def test_the_scan_finds_metric_names_and_nothing_else():
    expr = (
        'histogram_quantile(0.95, sum by (le, activity_type) (rate(a_seconds_bucket{x="y"}[5m])))'
        " / clamp_min(sum(rate(b_total[5m])), 1e-9) > 0.1 and deriv(max(c)[10m:1m]) > 0"
        ' or absent(up{job="w"})'
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c", "up"}


def test_the_exported_names_include_every_business_metric_of_the_issue():
    names = exported()
    required = {
        "trading_orders_total",
        "trading_order_fill_seconds_bucket",
        "trading_fills_total",
        "trading_slippage_bps_bucket",
        "trading_rejections_total",
        "trading_compensations_total",
        "trading_open_orders",
        "trading_broker_unreachable_orders",
        "trading_outbox_backlog",
        "trading_outbox_oldest_seconds",
        "trading_venue_match_seconds_bucket",
        "trading_stream_reconnects_total",
        "trading_portfolio_equity",
        "trading_portfolio_cash",
        "trading_portfolio_drawdown_ratio",
        "trading_reconciliation_discrepancies",
        "process_cpu_seconds_total",
    }
    assert required - names == set()


@pytest.mark.parametrize("rule", RULES, ids=[rule["alert"] for rule in RULES])
def test_every_alert_reads_exported_metrics(rule):
    assert {"alert", "expr", "for", "labels", "annotations"} <= set(rule)
    assert rule["labels"]["severity"] in {"page", "critical", "warning", "ticket"}
    names = metric_names(rule["expr"])
    assert names, f"{rule['alert']} reads no metric"
    unknown = {n for n in names - SYNTHETIC - exported() if not n.startswith(SDK_PREFIX)}
    assert unknown == set(), f"{rule['alert']} reads {unknown}, which nothing exports"


def test_the_alerts_the_issue_asks_for_are_there():
    by_name = {rule["alert"]: rule for rule in RULES}
    assert "> 0.05" in by_name["TradingRejectionRateHigh"]["expr"]
    assert "> 0.10" in by_name["TradingRejectionRateCritical"]["expr"]
    assert "> 0.1\n" in by_name["TradingOrderLatencyHigh"]["expr"] + "\n"
    assert "> 0.5" in by_name["TradingOrderLatencyCritical"]["expr"]
    reads = {name: metric_names(rule["expr"]) for name, rule in by_name.items()}
    assert "trading_broker_unreachable_orders" in reads["TradingBrokerUnreachable"]
    assert "trading_outbox_backlog" in reads["TradingOutboxBacklogGrowing"]
    assert "trading_compensations_total" in reads["TradingCompensations"]
    assert "trading_reconciliation_discrepancies" in reads["TradingReconciliationDiscrepancies"]
    assert 'job="trading-worker"' in by_name["TradingWorkerDown"]["expr"]


@pytest.mark.parametrize("title,expr", panel_expressions())
def test_every_dashboard_panel_reads_exported_metrics(title, expr):
    names = metric_names(expr)
    assert names, f"panel {title!r} reads no metric"
    unknown = {n for n in names - exported() if not n.startswith(SDK_PREFIX)}
    assert unknown == set(), f"panel {title!r} reads {unknown}, which nothing exports"


def test_the_dashboard_covers_what_the_issue_lists():
    assert all(panel["targets"] for panel in PANELS)
    assert {panel["datasource"]["uid"] for panel in PANELS} == {"prometheus"}
    read = set().union(*(metric_names(expr) for _, expr in panel_expressions()))
    for needed in (
        "trading_orders_total",  # order flow
        "trading_order_fill_seconds_bucket",  # latency
        "trading_fills_total",
        "trading_slippage_bps_bucket",
        "trading_rejections_total",
        "trading_portfolio_equity",
        "trading_portfolio_drawdown_ratio",
        "trading_outbox_backlog",
        "trading_venue_match_seconds_bucket",
        "temporal_workflow_task_schedule_to_start_latency_seconds_bucket",
    ):
        assert needed in read, f"the dashboard shows no {needed}"


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus():
    base = ROOT / "deploy/grafana/provisioning"
    source = yaml.safe_load((base / "datasources/prometheus.yml").read_text())["datasources"][0]
    assert source["uid"] == "prometheus" and source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((base / "dashboards/trading.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
