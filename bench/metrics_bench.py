"""Benchmark of the worker's /metrics: the store gauges' reading and a whole scrape, beside
one indexed SELECT on the same pool as the baseline (median of N).

    .venv/bin/python bench/metrics_bench.py [--n 200] [--orders 2000]

Starts a throwaway embedded PostgreSQL unless DATABASE_URL is set, fills it with portfolios,
orders (a tenth open) and undelivered outbox rows, then times `read_store` and an HTTP
scrape of the worker's registry (business, store and process metrics; no Temporal SDK).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

from activities import metrics
from activities.store import ledger
from activities.store.ledger import MarketContext
from activities.store.migrations import migrate_up
from activities.store.postgres import create_pool, database_url, resolve_database
from contracts.payloads import OrderRequest, RecordStatusInput, order_id_for
from domain.orders import OrderSide, OrderStatus, TimeInForce
from domain.portfolio import Portfolio, RiskLimits
from worker.metrics_server import MetricsServer, worker_registry


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def main(n: int, orders: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with resolve_database(database_url(), Path(tmp) / "pg") as url:
            pool = await create_pool(url, 2, 4)
            await migrate_up(pool)
            limits = RiskLimits(
                max_position_size=Decimal("1e9"),
                max_order_notional=Decimal("1e9"),
                max_concentration=Decimal("1"),
                max_positions=1000,
            )
            portfolios = [
                Portfolio(initial_capital=Decimal("1e9"), limits=limits) for _ in range(10)
            ]
            for portfolio in portfolios:
                await ledger.create_portfolio(pool, portfolio)
            now = datetime.now(UTC)
            market = MarketContext(Decimal("99.99"), Decimal("100.01"), Decimal("0"), True, None)
            for i in range(orders):
                portfolio = portfolios[i % len(portfolios)]
                client_order_id = str(uuid4())
                request = OrderRequest(
                    order_id=order_id_for(portfolio.id, client_order_id),
                    portfolio_id=portfolio.id,
                    client_order_id=client_order_id,
                    symbol="AAPL",
                    side=OrderSide.BUY,
                    quantity=Decimal(1),
                    time_in_force=TimeInForce.GTC,
                )
                placed = await ledger.place_order(pool, request, now, market)
                if i % 10:  # nine in ten closed
                    change = RecordStatusInput(placed.order_id, OrderStatus.CANCELED)
                    await ledger.record_status(pool, change, now)
            loop = asyncio.get_running_loop()
            server = MetricsServer(worker_registry(pool, loop, None), "127.0.0.1", 0)
            server.start()

            def scrape() -> int:
                with urllib.request.urlopen(server.url, timeout=10) as response:
                    return len(response.read())

            baseline, reads, scrapes = [], [], []
            size = 0
            for _ in range(n):
                began = time.perf_counter()
                await pool.fetchval("SELECT status FROM orders WHERE id = $1", portfolios[0].id)
                baseline.append(time.perf_counter() - began)
                began = time.perf_counter()
                await metrics.read_store(pool)
                reads.append(time.perf_counter() - began)
                began = time.perf_counter()
                size = await asyncio.to_thread(scrape)
                scrapes.append(time.perf_counter() - began)
            server.stop()
            await pool.close()
    print(f"{orders} orders ({orders // 10} open), {len(portfolios)} portfolios, n={n}")
    print(f"indexed SELECT (baseline)   median {median_ms(baseline):7.3f} ms")
    print(f"read_store (store gauges)   median {median_ms(reads):7.3f} ms")
    print(f"whole /metrics scrape       median {median_ms(scrapes):7.3f} ms ({size} bytes)")
    print(
        f"read_store / baseline       {statistics.median(reads) / statistics.median(baseline):.1f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--orders", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.orders))
