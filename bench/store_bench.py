"""Benchmark of the store: one apply-fill transaction and one portfolio read (median of N).

    .venv/bin/python bench/store_bench.py [--n 1000]

Starts a throwaway embedded PostgreSQL (durable: fsync on, as in production) unless
DATABASE_URL is set, migrates a fresh database, and times each operation sequentially.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

from activities.store import ledger
from activities.store.ledger import MarketContext
from activities.store.migrations import migrate_up
from activities.store.postgres import create_pool, database_url, resolve_database
from activities.store.repositories import UnitOfWork
from contracts.payloads import OrderRequest, RecordStatusInput, order_id_for
from domain.orders import Fill, OrderSide, OrderStatus, TimeInForce
from domain.portfolio import Portfolio, RiskLimits


def summary(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[int(len(ms) * 0.95) - 1]
    return f"{name:<28} median {statistics.median(ms):7.3f} ms   p95 {p95:7.3f} ms   n={len(ms)}"


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with resolve_database(database_url(), Path(tmp) / "pg") as url:
            pool = await create_pool(url, 2, 4)
            await migrate_up(pool)
            limits = RiskLimits(
                max_position_size=Decimal("1e9"),
                max_order_notional=Decimal("1e9"),
                max_concentration=Decimal("1"),
            )
            portfolio = Portfolio(initial_capital=Decimal("10000000"), limits=limits)
            await ledger.create_portfolio(pool, portfolio)
            now = datetime.now(UTC)
            market = MarketContext(Decimal("99.99"), Decimal("100.01"), Decimal("1"), True, None)
            client_order_id = str(uuid4())
            request = OrderRequest(
                order_id=order_id_for(portfolio.id, client_order_id),
                portfolio_id=portfolio.id,
                client_order_id=client_order_id,
                symbol="AAPL",
                side=OrderSide.BUY,
                quantity=Decimal(n),
                time_in_force=TimeInForce.GTC,
            )
            placed = await ledger.place_order(pool, request, now, market)
            await ledger.record_status(
                pool, RecordStatusInput(placed.order_id, OrderStatus.SUBMITTED, "B-1"), now
            )
            fills: list[float] = []
            for k in range(n):
                fill = Fill(f"bench-{k}", Decimal(1), Decimal("100.00"), Decimal("0.01"), now)
                began = time.perf_counter()
                await ledger.apply_fill(pool, placed.order_id, fill)
                fills.append(time.perf_counter() - began)
            reads: list[float] = []
            for _ in range(n):
                began = time.perf_counter()
                async with UnitOfWork(pool) as uow:
                    await uow.portfolios.get(portfolio.id)
                reads.append(time.perf_counter() - began)
            print(summary("apply_fill transaction", fills))
            print(summary("portfolio read (1 position)", reads))
            await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    asyncio.run(main(parser.parse_args().n))
