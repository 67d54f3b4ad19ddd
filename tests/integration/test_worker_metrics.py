"""The worker's metrics: counted once where the event happens, gauges read from the store,
and one /metrics endpoint carrying business, process and Temporal SDK metrics."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import metrics
from activities.store import ledger
from activities.store.ledger import MarketContext
from bootstrap.converter import DATA_CONVERTER
from bootstrap.temporal import time_skipping_server_path
from contracts.payloads import OrderRequest, RecordStatusInput, order_id_for
from domain.orders import Fill, OrderSide, OrderStatus
from domain.portfolio import Portfolio, RiskLimits
from tests.promql import metric_names
from worker.metrics_server import (
    MetricsServer,
    free_loopback_port,
    sdk_runtime,
    worker_registry,
)

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
LIMITS = RiskLimits(
    max_position_size=D("1000000"),
    max_order_notional=D("1000000"),
    max_concentration=D("1"),
    max_positions=50,
    daily_loss_limit=D("100000"),
)
MARKET = MarketContext(D("99.99"), D("100.01"), D("0"), True, NOW + timedelta(hours=1))


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0


class Counts:
    """Every counter and histogram count the store hooks touch, before and after."""

    NAMES = [
        ("trading_fills_total", {}),
        ("trading_orders_total", {"status": "filled"}),
        ("trading_orders_total", {"status": "rejected"}),
        ("trading_orders_total", {"status": "canceled"}),
        ("trading_rejections_total", {"code": "RISK_LIMIT_EXCEEDED"}),
        ("trading_rejections_total", {"code": "BROKER_REJECTED"}),
        ("trading_compensations_total", {}),
        ("trading_slippage_bps_count", {}),
        ("trading_slippage_bps_bucket", {"le": "1.0"}),
        ("trading_slippage_bps_bucket", {"le": "2.0"}),
        ("trading_order_fill_seconds_count", {"order_type": "market"}),
        ("trading_order_fill_seconds_sum", {"order_type": "market"}),
    ]

    def __init__(self) -> None:
        self.before = self.read()

    @classmethod
    def read(cls) -> dict[str, float]:
        return {f"{name}{labels}": sample(name, labels) for name, labels in cls.NAMES}

    def delta(self) -> dict[str, float]:
        after = self.read()
        return {
            key: after[key] - self.before[key] for key in after if after[key] != self.before[key]
        }


async def new_portfolio(pool) -> Portfolio:
    portfolio = Portfolio(initial_capital=D("100000.00"), limits=LIMITS, name="metrics")
    await ledger.create_portfolio(pool, portfolio)
    return portfolio


def request(portfolio: Portfolio, qty: str, side: str = "buy") -> OrderRequest:
    client_order_id = str(uuid.uuid4())
    return OrderRequest(
        order_id=order_id_for(portfolio.id, client_order_id),
        portfolio_id=portfolio.id,
        client_order_id=client_order_id,
        symbol="AAPL",
        side=OrderSide(side),
        quantity=D(qty),
    )


async def test_a_fill_is_counted_once_with_its_slippage_and_fill_time(db_pool):
    portfolio = await new_portfolio(db_pool)
    placed = await ledger.place_order(db_pool, request(portfolio, "10"), NOW, MARKET)
    change = RecordStatusInput(placed.order_id, OrderStatus.SUBMITTED, "B-1")
    await ledger.record_status(db_pool, change, NOW)
    counts = Counts()
    # 100.03 against an arrival ask of 100.01: 2 cents worse on a buy, +2 bps (rounded).
    fill = Fill("x-1", D("10"), D("100.03"), executed_at=NOW + timedelta(seconds=2))
    await ledger.apply_fill(db_pool, placed.order_id, fill)
    await ledger.apply_fill(db_pool, placed.order_id, fill)  # a retried activity
    # (A histogram with negative buckets has no _sum: its buckets place the observation.)
    assert counts.delta() == {
        "trading_fills_total{}": 1,
        "trading_orders_total{'status': 'filled'}": 1,
        "trading_slippage_bps_count{}": 1,
        "trading_slippage_bps_bucket{'le': '2.0'}": 1,  # 1.9998 bps: above 1, at most 2
        "trading_order_fill_seconds_count{'order_type': 'market'}": 1,
        "trading_order_fill_seconds_sum{'order_type': 'market'}": 2,  # accepted NOW, filled +2 s
    }
    assert metrics.slippage_bps(OrderSide.BUY, D("100.03"), D("100.01")).quantize(D("0.0001")) == D(
        "1.9998"
    )


def test_slippage_is_positive_when_worse_on_either_side():
    assert metrics.slippage_bps(OrderSide.BUY, D("101"), D("100")) == D("100")
    assert metrics.slippage_bps(OrderSide.SELL, D("99"), D("100")) == D("100")
    assert metrics.slippage_bps(OrderSide.SELL, D("101"), D("100")) == D("-100")


async def test_rejections_and_compensations_are_counted_once_by_code(db_pool):
    portfolio = await new_portfolio(db_pool)
    counts = Counts()
    refused = request(portfolio, "10")
    rejection = ("RISK_LIMIT_EXCEEDED", "too big")
    await ledger.place_order(db_pool, refused, NOW, None, rejection)
    await ledger.place_order(db_pool, refused, NOW, None, rejection)  # replayed accept
    broker = await ledger.place_order(db_pool, request(portfolio, "1"), NOW, MARKET)
    reject = RecordStatusInput(broker.order_id, OrderStatus.REJECTED, code="BROKER_REJECTED")
    await ledger.record_status(db_pool, reject, NOW)
    await ledger.record_status(db_pool, reject, NOW)
    failed = await ledger.place_order(db_pool, request(portfolio, "1"), NOW, MARKET)
    compensate = RecordStatusInput(failed.order_id, OrderStatus.CANCELED, code="COMPENSATED")
    await ledger.record_status(db_pool, compensate, NOW)
    await ledger.record_status(db_pool, compensate, NOW)
    assert counts.delta() == {
        "trading_orders_total{'status': 'rejected'}": 2,
        "trading_orders_total{'status': 'canceled'}": 1,
        "trading_rejections_total{'code': 'RISK_LIMIT_EXCEEDED'}": 1,
        "trading_rejections_total{'code': 'BROKER_REJECTED'}": 1,
        "trading_compensations_total{}": 1,
    }


async def test_store_gauges_read_open_orders_outbox_and_portfolios(db_pool):
    portfolio = await new_portfolio(db_pool)
    open_order = await ledger.place_order(db_pool, request(portfolio, "1"), NOW, MARKET)
    waiting = await ledger.place_order(db_pool, request(portfolio, "2"), NOW, MARKET)
    await ledger.record_broker_reachability(db_pool, waiting.order_id, NOW)
    await db_pool.execute(
        "INSERT INTO venue_orders (client_order_id, broker_order_id, symbol, side, order_type, "
        "time_in_force, quantity) VALUES ($1, 'PV-1', 'AAPL', 'buy', 'market', 'day', 1)",
        str(open_order.order_id),
    )
    await db_pool.execute(
        "INSERT INTO venue_outbox (client_order_id, event, payload, created_at) "
        "VALUES ($1, 'new', '{}', now() - interval '90 seconds'), ($1, 'fill', '{}', now())",
        str(open_order.order_id),
    )
    await db_pool.execute(
        "INSERT INTO portfolio_snapshots (portfolio_id, taken_at, kind, cash, positions_value, "
        "equity, realized_pnl, unrealized_pnl, return_pct, drawdown) "
        "VALUES ($1, $2, 'intraday', 100000, 0, 98000, 0, 0, -2, 2.5)",
        portfolio.id,
        NOW,
    )
    reading = await metrics.read_store(db_pool)
    assert reading.open_orders == 2
    assert reading.broker_unreachable_orders == 1
    assert reading.outbox_backlog == 2
    assert 90 <= reading.outbox_oldest_seconds < 3600
    assert reading.equity == {str(portfolio.id): D("98000")}
    assert reading.drawdown_ratio == {str(portfolio.id): D("0.025")}
    assert set(reading.cash) == {str(portfolio.id)}
    assert reading.reconciliation_discrepancies == 0


# -- the endpoint, with a real worker ---------------------------------------------------------


@activity.defn(name="metrics_probe")
async def probe(value: str) -> str:
    return value


@workflow.defn(name="MetricsProbe", sandboxed=False)
class ProbeWorkflow:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(
            probe, "ok", start_to_close_timeout=timedelta(seconds=10)
        )


def dashboard_and_alert_reads() -> set[str]:
    root = Path(__file__).resolve().parents[2]
    rules = yaml.safe_load((root / "deploy/alerts.yml").read_text())["groups"]
    dashboard = json.loads((root / "deploy/grafana/dashboards/trading.json").read_text())
    expressions = [rule["expr"] for group in rules for rule in group["rules"]] + [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    return set().union(*map(metric_names, expressions))


def scrape(url: str) -> dict[str, set[str]]:
    """family name -> the sample names it carries, from one scrape."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        family.name: {s.name for s in family.samples}
        for family in text_string_to_metric_families(text)
    }


async def test_one_endpoint_serves_business_store_process_and_temporal_sdk_metrics(db_pool):
    portfolio = await new_portfolio(db_pool)
    await ledger.place_order(db_pool, request(portfolio, "1"), NOW, MARKET)
    sdk_port = free_loopback_port()
    runtime = sdk_runtime(sdk_port)
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(time_skipping_server_path()),
        data_converter=DATA_CONVERTER,
        runtime=runtime,
    )
    registry = worker_registry(
        db_pool, asyncio.get_running_loop(), f"http://127.0.0.1:{sdk_port}/metrics"
    )
    server = MetricsServer(registry, "127.0.0.1", 0)
    server.start()
    try:
        queue = f"metrics-{uuid.uuid4()}"
        async with Worker(
            env.client, task_queue=queue, workflows=[ProbeWorkflow], activities=[probe]
        ):
            result = await env.client.execute_workflow(
                ProbeWorkflow.run, id=f"probe-{uuid.uuid4()}", task_queue=queue
            )
            assert result == "ok"
            # The HTTP thread reads the store on this loop: scrape from another thread.
            families = await asyncio.to_thread(scrape, server.url)
    finally:
        server.stop()
        await env.shutdown()
    for name in (
        "trading_orders",
        "trading_fills",
        "trading_open_orders",
        "trading_outbox_backlog",
        "trading_portfolio_cash",
        "trading_venue_match_seconds",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "temporal_workflow_task_schedule_to_start_latency_seconds",
        "temporal_activity_execution_latency_seconds",
        "temporal_workflow_completed",
    ):
        assert name in families, f"{name} missing from the worker's /metrics"
    assert "temporal_workflow_completed_total" in families["temporal_workflow_completed"]
    # Every SDK metric the alerts and the dashboard read is one this worker serves.
    served = set().union(*families.values())
    sdk_reads = {name for name in dashboard_and_alert_reads() if name.startswith("temporal_")}
    assert sdk_reads, "the dashboard reads no Temporal SDK metric"
    assert sdk_reads - served == set()
    reading = await metrics.read_store(db_pool)
    assert reading.open_orders == 1


async def test_a_store_that_does_not_answer_serves_the_last_reading_in_bounded_time(db_pool):
    loop = asyncio.get_running_loop()
    gauges = metrics.StoreGauges(db_pool, loop, timeout=0.2)
    failures = sample("trading_metrics_store_read_failures_total")
    async with db_pool.acquire() as conn, conn.transaction():
        # Lock every table the reading selects from, so it cannot finish.
        await conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        reading = await asyncio.to_thread(gauges.refresh)
    assert reading == metrics.StoreReading()
    assert sample("trading_metrics_store_read_failures_total") == failures + 1
