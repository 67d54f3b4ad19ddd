"""Running a backtest: the strategy workflow and the order workflows that trade live, on
Temporal's time-skipping test server, with a real PostgreSQL (a throwaway database), against
a venue that replays the bars (activities/backtest/replay.py). Nothing about an order is
special-cased: the same OrderWorkflow, risk check, reservation, ledger and broker port.

What differs from a live worker is only what it is wired to: the broker and the market data
are the replay venue, the activities' clock is the replay clock (orders and fills carry the
bars' times), the market is always open, and the portfolio's risk limits default to
allowing 100 % of the equity in one name (`BACKTEST_LIMITS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.backtest.data import BacktestInputError
from activities.backtest.replay import BarReplay, MarketFill
from activities.backtest.report import Execution, build_report
from activities.calendar.sessions import MarketSessions
from activities.order_activities import OrderActivities
from activities.store import ledger
from activities.store.migrations import migrate_up
from activities.store.postgres import LocalPostgres, create_pool, database_url
from activities.strategy_activities import StrategyActivities
from activities.venue.outbox import temporal_deliver
from bootstrap.converter import DATA_CONVERTER
from bootstrap.heartbeat import HeartbeatInterceptor
from bootstrap.strategies import load_strategy
from bootstrap.temporal import register_search_attributes, time_skipping_server_path
from contracts.payloads import OrderWorkflowOptions
from contracts.strategies import ReplayProgress, StrategyRunInput
from domain.commissions import CommissionModel, PercentageOfNotional
from domain.market import Bar, Timeframe
from domain.portfolio import Portfolio, RiskLimits
from workflows.order import OrderWorkflow
from workflows.strategy import StrategyRunWorkflow

LARGE = Decimal("100000000000")  # 1e11: no limit in practice (the store holds < 1e12)
BACKTEST_LIMITS = RiskLimits(
    max_position_size=LARGE,
    max_portfolio_risk=Decimal(1),
    max_positions=1000,
    # Sizing never uses more than 1x the equity (StrategyActivities.plan_opening); 2x here
    # lets a losing short still be covered: risk refuses even a closing order whose
    # commission exceeds the buying power, which a short that lost turns negative.
    max_leverage=Decimal(2),
    max_order_notional=LARGE,
    max_concentration=Decimal(1),
    daily_loss_limit=LARGE,
    market_order_buffer=Decimal(0),
)
PORTFOLIO_ID = uuid.UUID("00000000-0000-5000-8000-00000000b4c7")
TASK_QUEUE = "backtest"
# The replay venue signals fills as the live relay does; an order that missed one reads
# the venue at its next poll (with time skipping, the wait costs nothing).
ORDER_OPTIONS = OrderWorkflowOptions(poll_interval_seconds=60, max_poll_interval_seconds=60)

Progress = Callable[[int, int], None]


@dataclass
class BacktestSpec:
    strategy: str
    bars: dict[str, list[Bar]]
    params: dict[str, str] = field(default_factory=dict)
    timeframe: Timeframe = Timeframe.DAY_1
    cash: Decimal = Decimal(10000)
    commission: CommissionModel = field(default_factory=lambda: PercentageOfNotional(Decimal(0)))
    commission_text: str = "0"
    market_fill: MarketFill = "open"
    limits: RiskLimits = BACKTEST_LIMITS


def check_spec(spec: BacktestSpec) -> None:
    """Everything that can be refused before anything runs (one line each)."""
    strategy = load_strategy(spec.strategy, spec.params)
    lengths = {symbol: len(bars) for symbol, bars in spec.bars.items()}
    if not lengths:
        raise BacktestInputError("no symbols to backtest")
    fewest = min(lengths.values())
    needed = strategy.history + 1
    if fewest < needed:
        raise BacktestInputError(
            f"not enough bars: {spec.strategy} needs at least {needed} "
            f"({strategy.history} to decide and one to trade on), the data has {fewest}"
        )
    if spec.cash <= 0:
        raise BacktestInputError(f"--cash must be positive, got {spec.cash}")


@contextlib.asynccontextmanager
async def throwaway_database() -> AsyncIterator[asyncpg.Pool]:
    """A migrated, empty database that is gone afterwards: a new database on the server
    `DATABASE_URL` names, or an embedded server in a temporary directory."""
    server_url = database_url()
    server: LocalPostgres | None = None
    base: Path | None = None
    name = f"backtest_{uuid.uuid4().hex[:10]}"
    if server_url is None:
        base = Path(tempfile.mkdtemp(prefix="trading-backtest-"))
        base.chmod(0o711)
        server = LocalPostgres(base / "pgdata", database="postgres", durable=False)
        try:
            await server.start()
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
        url = server.url
    else:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        from urllib.parse import urlsplit, urlunsplit

        url = urlunsplit(urlsplit(server_url)._replace(path="/" + name))
    try:
        pool = await create_pool(url, min_size=2, max_size=10, application_name="backtest")
        try:
            await migrate_up(pool)
            yield pool
        finally:
            await pool.close()
    finally:
        if server is not None:
            try:
                await server.stop()
            finally:
                if base is not None:
                    shutil.rmtree(base, ignore_errors=True)
        elif server_url is not None:
            conn = await asyncpg.connect(server_url)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()


async def run_backtest(
    spec: BacktestSpec,
    progress: Progress | None = None,
    *,
    env: WorkflowEnvironment | None = None,
    pool: asyncpg.Pool | None = None,
) -> dict[str, Any]:
    """Run `spec` and answer with the report (report.json's content). `env` and `pool`
    (tests): an existing time-skipping server and an empty migrated database."""
    check_spec(spec)
    async with contextlib.AsyncExitStack() as stack:
        if pool is None:
            pool = await stack.enter_async_context(throwaway_database())
        if env is None:
            quiet = Runtime(  # the test server lacks features the SDK warns about
                telemetry=TelemetryConfig(
                    logging=LoggingConfig(
                        filter=TelemetryFilter(core_level="ERROR", other_level="ERROR")
                    )
                )
            )
            env = await WorkflowEnvironment.start_time_skipping(
                test_server_existing_path=str(time_skipping_server_path()),
                data_converter=DATA_CONVERTER,
                runtime=quiet,
            )
            stack.push_async_callback(env.shutdown)
            await register_search_attributes(env.client)
        return await _run(spec, env, pool, progress)
    raise AssertionError("unreachable")


async def _run(
    spec: BacktestSpec, env: WorkflowEnvironment, pool: asyncpg.Pool, progress: Progress | None
) -> dict[str, Any]:
    replay = BarReplay(
        spec.bars, spec.commission, spec.market_fill, deliver=temporal_deliver(env.client, pool)
    )
    portfolio = Portfolio(
        id=PORTFOLIO_ID, initial_capital=spec.cash, limits=spec.limits, name="backtest"
    )
    await ledger.create_portfolio(pool, portfolio)
    sessions = MarketSessions("always_open")
    orders = OrderActivities(pool, replay, replay, sessions, spec.commission, clock=replay.now)
    strategy = StrategyActivities(
        pool, replay, sessions, spec.commission, replay, loader=load_strategy
    )
    task_queue = f"{TASK_QUEUE}-{uuid.uuid4().hex[:8]}"
    symbols = sorted(spec.bars)
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[OrderWorkflow, StrategyRunWorkflow],
        activities=[*orders.all(), *strategy.all()],
        interceptors=[HeartbeatInterceptor()],
    ):
        handle = await env.client.start_workflow(
            StrategyRunWorkflow.run,
            StrategyRunInput(
                strategy=spec.strategy,
                symbols=symbols,
                portfolio_id=PORTFOLIO_ID,
                params=dict(spec.params),
                timeframe=spec.timeframe,
                replay=True,
                order_options=ORDER_OPTIONS,
                run_id="backtest",
            ),
            id=f"backtest-{task_queue}",
            task_queue=task_queue,
        )
        result = asyncio.ensure_future(handle.result())
        while not result.done():
            await asyncio.wait([result], timeout=0.25)
            if progress is not None and not result.done():
                with contextlib.suppress(Exception):
                    state: ReplayProgress = await handle.query(StrategyRunWorkflow.progress)
                    progress(state.done, state.total)
        await result
    if progress is not None:
        progress(len(replay), len(replay))
    rows = await pool.fetch(
        """
        SELECT e.symbol, e.side, e.quantity, e.price, e.commission, e.executed_at,
               coalesce(so.reason, '') AS reason
        FROM executions e LEFT JOIN strategy_orders so ON so.order_id = e.order_id
        WHERE e.portfolio_id = $1
        ORDER BY e.executed_at, e.created_at, e.execution_id
        """,
        PORTFOLIO_ID,
    )
    executions = [
        Execution(
            symbol=row["symbol"],
            side=row["side"],
            quantity=row["quantity"],
            price=row["price"],
            commission=row["commission"],
            executed_at=row["executed_at"],
            reason=row["reason"],
        )
        for row in rows
    ]
    ledger_cash: Decimal = await pool.fetchval(
        "SELECT cash_balance FROM portfolios WHERE id = $1", PORTFOLIO_ID
    )
    report = build_report(
        strategy=spec.strategy,
        params=spec.params,
        bars=spec.bars,
        executions=executions,
        cash=spec.cash,
        settings={
            "cash": str(spec.cash),
            "commission": spec.commission_text,
            "timeframe": spec.timeframe.value,
            "market_fill": f"next bar's {spec.market_fill}",
            "limit_stop_fill": "next bar's high/low at the price, or its open on a gap",
        },
    )
    if Decimal(report["final_cash"]) != ledger_cash:
        raise RuntimeError(
            f"report cash {report['final_cash']} differs from the ledger's {ledger_cash}"
        )
    return report
