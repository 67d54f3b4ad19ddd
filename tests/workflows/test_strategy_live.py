"""A live strategy run on the time-skipping server: it reads bars through the market-data
activity, places ordinary OrderWorkflows that fill at the paper venue, records its report
with the strategy and reason of each order, and places nothing while trading is HALTED."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from temporalio.worker import Worker

from activities.calendar.sessions import MarketSessions
from activities.strategy_activities import StrategyActivities
from bootstrap.control import set_trading_state
from contracts.strategies import RunStatus, StrategyRunInput, StrategyRunReport
from domain.market import Bar, Timeframe
from domain.orders import OrderSide, OrderStatus
from domain.portfolio import TradingState
from tests.workflows.harness import COMMISSION, running_stack
from workflows.strategy import StrategyRunWorkflow

T0 = datetime(2024, 1, 1, 14, 30, tzinfo=UTC)


def bars(closes: list[str]) -> list[Bar]:
    out = []
    for i, text in enumerate(closes):
        close = Decimal(text)
        out.append(
            Bar(
                "AAPL",
                Timeframe.MINUTE_5,
                T0 + timedelta(minutes=5 * i),
                close,
                close + 1,
                close - 1,
                close,
                Decimal(1000),
            )
        )
    return out


async def run_strategy(stack, run_id: str) -> StrategyRunReport:
    queue = f"strategies-{uuid.uuid4()}"
    activities = StrategyActivities(
        stack.pool, stack.feed, MarketSessions("always_open"), COMMISSION
    )
    async with Worker(
        stack.env.client,
        task_queue=queue,
        workflows=[StrategyRunWorkflow],
        activities=activities.all(),
    ):
        report: StrategyRunReport = await stack.env.client.execute_workflow(
            StrategyRunWorkflow.run,
            StrategyRunInput(
                strategy="sma_crossover",
                symbols=["AAPL"],
                portfolio_id=stack.portfolio.id,
                params={"fast": "2", "slow": "3"},
                timeframe=Timeframe.MINUTE_5,
                bars=10,
                run_id=run_id,
                order_task_queue=stack.task_queue,
            ),
            id=run_id,
            task_queue=queue,
        )
    return report


async def test_a_live_run_places_orders_and_the_kill_switch_stops_it(temporal_env, db_pool):
    async with running_stack(temporal_env, db_pool, cash="10000.00") as stack:
        # 10, 9, 8, 7, 12: SMA2 crosses above SMA3 on the last bar -> go long
        stack.feed.set_bars("AAPL", bars(["10", "9", "8", "7", "12"]))
        stack.feed.set_quote("AAPL", "99.99", "100.00", bid_size=10000, ask_size=10000)

        report = await run_strategy(stack, "strategy-test-run-1")

        assert report.status is RunStatus.COMPLETED
        assert len(report.orders) == 1
        order = report.orders[0]
        assert order.side is OrderSide.BUY and order.status is OrderStatus.FILLED
        # all equity with the 2 % market-order buffer and the per-share commission:
        # 10000 / 1.02 = 9803.92 at 100.00 -> 98 shares (98 * 100 + 1.00 <= 9803.92)
        assert order.quantity == Decimal(98)
        assert "crossed above" in order.reason
        row = await db_pool.fetchrow(
            "SELECT o.status, s.strategy, s.reason, s.run_id FROM orders o "
            "JOIN strategy_orders s ON s.order_id = o.id WHERE o.id = $1",
            order.order_id,
        )
        assert row["status"] == "filled" and row["strategy"] == "sma_crossover"
        assert row["run_id"] == "strategy-test-run-1" and row["reason"] == order.reason
        held = await db_pool.fetchval(
            "SELECT quantity FROM positions WHERE portfolio_id = $1 AND symbol = 'AAPL'",
            stack.portfolio.id,
        )
        assert held == Decimal(98)

        # The opposite cross while HALTED: the run places nothing.
        stack.feed.set_bars("AAPL", bars(["7", "8", "9", "10", "5"]))
        await set_trading_state(
            temporal_env.client,
            db_pool,
            stack.portfolio.id,
            TradingState.HALTED,
            "test: halt",
            task_queue=stack.task_queue,
        )
        orders_before = await db_pool.fetchval("SELECT count(*) FROM orders")

        halted = await run_strategy(stack, "strategy-test-run-2")

        assert halted.status is RunStatus.HALTED and halted.orders == []
        assert await db_pool.fetchval("SELECT count(*) FROM orders") == orders_before
        stored = await db_pool.fetchrow(
            "SELECT status, note FROM strategy_runs WHERE run_id = 'strategy-test-run-2'"
        )
        assert stored["status"] == "halted" and "halted" in stored["note"]
