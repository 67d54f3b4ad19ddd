"""The worker's business metrics (prometheus-client), in one registry: `REGISTRY`.

Counters and histograms count events where they happen, once: the hooks below are called
by the store only when its idempotent write changed something (a new execution applied, an
order entering a terminal status), never on a retried activity that found the work done.
A counter lives in the process that saw the event; Prometheus sums them over the workers.

The gauges that describe the store (open orders, orders waiting for an unreachable broker,
the venue outbox, portfolio cash, equity and drawdown, the last reconciliation) are read
from PostgreSQL at scrape time by `StoreGauges`, bounded by a timeout: a scrape never
hangs on a slow database, it serves the last reading and counts the failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from contracts.payloads import OrderSnapshot
from domain.orders import Fill, OrderSide, OrderStatus

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

# Seconds from accept to the last fill: a market order fills in ~0.1-0.5 s on the paper
# venue; a resting limit order may take hours.
FILL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400)
# Basis points, signed (worse than the arrival quote is positive).
SLIPPAGE_BUCKETS = (-50, -20, -10, -5, -2, -1, 0, 1, 2, 5, 10, 20, 50, 100)
# One matching pass over the working orders (bench: ~2 ms resting, ~100 ms for 100 fills).
MATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

ORDERS = Counter(
    "trading_orders",
    "Orders that reached a terminal status, by status",
    ["status"],
    registry=REGISTRY,
)
ORDER_FILL_SECONDS = Histogram(
    "trading_order_fill_seconds",
    "Seconds from accept to the fill that completed the order, by order type",
    ["order_type"],
    buckets=FILL_BUCKETS,
    registry=REGISTRY,
)
FILLS = Counter("trading_fills", "Executions applied to the ledger", registry=REGISTRY)
SLIPPAGE_BPS = Histogram(
    "trading_slippage_bps",
    "Fill price against the arrival quote (ask for a buy, bid for a sell) in basis points; "
    "worse than the quote is positive",
    buckets=SLIPPAGE_BUCKETS,
    registry=REGISTRY,
)
REJECTIONS = Counter(
    "trading_rejections",
    "Orders rejected (by risk, the venue or the broker), by reason code",
    ["code"],
    registry=REGISTRY,
)
COMPENSATIONS = Counter(
    "trading_compensations",
    "Orders closed by the saga's compensation after a failure past submit",
    registry=REGISTRY,
)
VENUE_MATCH_SECONDS = Histogram(
    "trading_venue_match_seconds",
    "Duration of one paper venue matching pass",
    buckets=MATCH_BUCKETS,
    registry=REGISTRY,
)
STREAM_RECONNECTS = Counter(
    "trading_stream_reconnects",
    "Times the broker's trade update stream failed and was reconnected",
    registry=REGISTRY,
)
STORE_READ_FAILURES = Counter(
    "trading_metrics_store_read_failures",
    "Scrapes whose store gauges could not be read in time (the last reading was served)",
    registry=REGISTRY,
)

COMPENSATED = "COMPENSATED"  # the code the order saga records a compensation with


# -- hooks: one call where the event happens ------------------------------------------------


def order_changed(
    before: OrderStatus | None, order: OrderSnapshot, code: str | None = None
) -> None:
    """After a committed write that moved an order from `before` (None: a new row) to
    `order.status`; counts the order once when that is its entry into a terminal status."""
    if (before is not None and before.is_terminal) or not order.status.is_terminal:
        return
    ORDERS.labels(order.status.value).inc()
    if order.status is OrderStatus.REJECTED:
        REJECTIONS.labels(order.reject_code or code or "UNKNOWN").inc()
    if code == COMPENSATED:
        COMPENSATIONS.inc()
    if order.status is OrderStatus.FILLED and order.filled_at is not None:
        seconds = (order.filled_at - order.created_at).total_seconds()
        ORDER_FILL_SECONDS.labels(order.order_type.value).observe(max(seconds, 0.0))


def fill_applied(order: OrderSnapshot, fill: Fill, arrival_price: Decimal | None) -> None:
    """After a committed write that applied a new execution (never a replayed one)."""
    FILLS.inc()
    if arrival_price is not None and arrival_price > 0:
        SLIPPAGE_BPS.observe(float(slippage_bps(order.side, fill.price, arrival_price)))


def slippage_bps(side: OrderSide, price: Decimal, arrival: Decimal) -> Decimal:
    """Basis points the fill is worse than the arrival price: paying more on a buy, or
    receiving less on a sell, is positive."""
    signed = price - arrival if side is OrderSide.BUY else arrival - price
    return signed / arrival * 10_000


# -- gauges read from the store at scrape time ----------------------------------------------


@dataclass(frozen=True)
class StoreReading:
    open_orders: int = 0
    broker_unreachable_orders: int = 0
    outbox_backlog: int = 0
    outbox_oldest_seconds: float = 0.0
    reconciliation_discrepancies: int = 0
    # portfolio id -> value
    cash: dict[str, Decimal] = field(default_factory=dict)
    equity: dict[str, Decimal] = field(default_factory=dict)
    drawdown_ratio: dict[str, Decimal] = field(default_factory=dict)


# Open statuses spelled out (not a parameter) so the planner uses the partial index
# idx_orders_open, whose predicate is this list: a count costs the open orders, not all.
_OPEN = ", ".join(f"'{status.value}'" for status in OrderStatus if not status.is_terminal)
_ORDER_GAUGES = f"""
SELECT
    (SELECT count(*) FROM orders WHERE status IN ({_OPEN})) AS open_orders,
    (SELECT count(*) FROM orders
     WHERE broker_unreachable_since IS NOT NULL AND status IN ({_OPEN})) AS unreachable,
    (SELECT count(*) FROM venue_outbox WHERE delivered_at IS NULL) AS backlog,
    (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)
     FROM venue_outbox WHERE delivered_at IS NULL) AS oldest,
    (SELECT count(*) FROM reconciliation_discrepancies
     WHERE NOT repaired AND report_id = (
        SELECT id FROM reconciliation_reports WHERE finished_at IS NOT NULL
        ORDER BY run_at DESC LIMIT 1)) AS discrepancies
"""
# Cash is the live ledger; equity and drawdown are the newest snapshot's (marked to market
# by the snapshot schedule; a portfolio without a snapshot yet has neither).
_PORTFOLIO_GAUGES = """
SELECT p.id::text AS portfolio, p.cash_balance AS cash, s.equity, s.drawdown
FROM portfolios p
LEFT JOIN LATERAL (
    SELECT equity, drawdown FROM portfolio_snapshots
    WHERE portfolio_id = p.id ORDER BY taken_at DESC, id DESC LIMIT 1
) s ON true
"""


async def read_store(pool: asyncpg.Pool) -> StoreReading:
    """One consistent reading of every store gauge (one REPEATABLE READ transaction)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        row = await conn.fetchrow(_ORDER_GAUGES)
        portfolios = await conn.fetch(_PORTFOLIO_GAUGES)
    assert row is not None
    reading = StoreReading(
        open_orders=row["open_orders"],
        broker_unreachable_orders=row["unreachable"],
        outbox_backlog=row["backlog"],
        outbox_oldest_seconds=float(row["oldest"]),
        reconciliation_discrepancies=row["discrepancies"],
    )
    for p in portfolios:
        reading.cash[p["portfolio"]] = p["cash"]
        if p["equity"] is not None:
            reading.equity[p["portfolio"]] = p["equity"]
            reading.drawdown_ratio[p["portfolio"]] = p["drawdown"] / 100
    return reading


class StoreGauges(Collector):
    """The store gauges, read from PostgreSQL on each scrape.

    `collect` runs in the metrics server's thread; the read runs on the worker's event loop
    (where the pool lives) and is waited for at most `timeout` seconds. On a timeout or an
    error the previous reading is served and `trading_metrics_store_read_failures_total`
    counts it.
    """

    def __init__(
        self, pool: asyncpg.Pool, loop: asyncio.AbstractEventLoop, timeout: float = 2.0
    ) -> None:
        self.pool = pool
        self.loop = loop
        self.timeout = timeout
        self.last = StoreReading()

    async def _read(self) -> StoreReading:
        async with asyncio.timeout(self.timeout):
            return await read_store(self.pool)

    def refresh(self) -> StoreReading:
        future = asyncio.run_coroutine_threadsafe(self._read(), self.loop)
        try:
            self.last = future.result(self.timeout + 0.5)
        except (FutureTimeout, TimeoutError, asyncpg.PostgresError, OSError) as err:
            future.cancel()
            STORE_READ_FAILURES.inc()
            log.warning("metrics: store gauges not read (%s); serving the last reading", err)
        except Exception:
            future.cancel()
            STORE_READ_FAILURES.inc()
            log.exception("metrics: store gauges not read; serving the last reading")
        return self.last

    def describe(self) -> Iterable[Metric]:
        return describe_store()

    def collect(self) -> Iterable[Metric]:
        return list(_families(self.refresh()))


def _families(reading: StoreReading) -> Iterator[Metric]:
    single = [
        ("trading_open_orders", "Orders not yet in a terminal status", reading.open_orders),
        (
            "trading_broker_unreachable_orders",
            "Open orders waiting for a broker that does not answer",
            reading.broker_unreachable_orders,
        ),
        (
            "trading_outbox_backlog",
            "Paper venue events not yet delivered to their order workflow",
            reading.outbox_backlog,
        ),
        (
            "trading_outbox_oldest_seconds",
            "Age of the oldest undelivered paper venue event (0 when none)",
            reading.outbox_oldest_seconds,
        ),
        (
            "trading_reconciliation_discrepancies",
            "Unrepaired discrepancies of the newest finished reconciliation",
            reading.reconciliation_discrepancies,
        ),
    ]
    for name, documentation, value in single:
        yield GaugeMetricFamily(name, documentation, value=float(value))
    per_portfolio = [
        ("trading_portfolio_cash", "Cash balance (the live ledger)", reading.cash),
        (
            "trading_portfolio_equity",
            "Equity marked to market at the newest portfolio snapshot",
            reading.equity,
        ),
        (
            "trading_portfolio_drawdown_ratio",
            "Drawdown from the equity peak at the newest portfolio snapshot (0.05 = 5 %)",
            reading.drawdown_ratio,
        ),
    ]
    for name, documentation, values in per_portfolio:
        family = GaugeMetricFamily(name, documentation, labels=["portfolio"])
        for portfolio, amount in sorted(values.items()):
            family.add_metric([portfolio], float(amount))
        yield family


def describe_store() -> list[Metric]:
    """The store gauges' families, without reading the store (names, types, help)."""
    return list(_families(StoreReading()))
