"""Reconciliation, snapshots and the kill switch on the time-skipping server.

Against the harness's real store, paper venue and order workflows.
"""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from temporalio.client import WorkflowHandle
from temporalio.worker import Replayer, Worker

from activities.calendar.sessions import MarketSessions
from activities.operations_activities import OperationsActivities
from activities.store.queries import list_snapshots
from bootstrap.control import set_trading_state
from bootstrap.converter import DATA_CONVERTER
from contracts.payloads import (
    CancelRequest,
    DiscrepancyKind,
    OrderWorkflowOptions,
    ReconciliationInput,
    ReportStatus,
    SnapshotInput,
    SnapshotKind,
    order_id_for,
    trading_state_workflow_id,
)
from contracts.ports import BrokerOrderNotFoundError
from domain.orders import OrderStatus
from domain.portfolio import TradingState
from workflows.operations import WORKFLOWS, ReconciliationWorkflow, SnapshotWorkflow
from workflows.order import OrderWorkflow

from .harness import Stack, running_stack, terminal

pytestmark = pytest.mark.integration

# Orders that never poll the broker on their own within a test: only events and signals
# (reconcile, cancel_request) move them.
QUIET = OrderWorkflowOptions(poll_interval_seconds=3600, max_poll_interval_seconds=3600)


@contextlib.asynccontextmanager
async def operations(stack: Stack, sessions: MarketSessions | None = None) -> AsyncIterator[str]:
    """A worker of the operations workflows beside the harness's order worker; its queue."""
    queue = f"operations-{uuid.uuid4()}"
    activities = OperationsActivities(
        stack.pool, stack.venue, stack.feed, sessions or MarketSessions("always_open")
    )
    async with Worker(
        stack.env.client, task_queue=queue, workflows=WORKFLOWS, activities=activities.all()
    ):
        yield queue


async def replays(handle: WorkflowHandle) -> None:
    history = await handle.fetch_history()
    replayer = Replayer(workflows=WORKFLOWS, data_converter=DATA_CONVERTER)
    await replayer.replay_workflow(history, raise_on_replay_failure=True)


async def venue_status(stack: Stack, order_id: uuid.UUID, timeout: float = 10.0) -> OrderStatus:
    """Wait in real time until the venue has closed the order; its status there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(BrokerOrderNotFoundError):  # not submitted yet
            state = await stack.venue.get_order(str(order_id))
            if state.status.is_terminal:
                return state.status
        await asyncio.sleep(0.02)
    raise AssertionError(f"the venue did not close order {order_id}")


def losing_fills_of(lost: set[str]):
    """A relay that drops the fill events of the orders in `lost` (client order ids)."""

    def wrap(send):
        async def deliver(workflow_id, event):
            if event.event.is_fill and event.client_order_id in lost:
                return
            await send(workflow_id, event)

        return deliver

    return wrap


async def test_reconciliation_repairs_lost_fills_and_flags_a_position_changed_behind_its_back(
    temporal_env, db_pool
):
    lost: set[str] = set()
    stack = running_stack(temporal_env, db_pool, deliver=losing_fills_of(lost), options=QUIET)
    async with stack as stack, operations(stack) as queue:
        stack.feed.set_quote("AAPL", "189.98", "190.00")
        stack.feed.set_quote("GOOGL", "170.00", "170.01")
        kept = await stack.place("AAPL", "10")
        await stack.wait_for(kept.order_id, terminal(OrderStatus.FILLED))
        lost.add(str(order_id_for(stack.portfolio.id, "lost-fill")))
        dropped = await stack.place("GOOGL", "4", client_order_id="lost-fill")
        assert await venue_status(stack, dropped.order_id) is OrderStatus.FILLED
        await stack.wait_for(dropped.order_id, terminal(OrderStatus.SUBMITTED))  # and no further
        # Someone edits a position row by hand.
        await db_pool.execute("UPDATE positions SET quantity = quantity + 1 WHERE symbol = 'AAPL'")

        run_at = datetime(2026, 11, 18, 21, 30, tzinfo=UTC)
        handle = await temporal_env.client.start_workflow(
            ReconciliationWorkflow.run,
            ReconciliationInput(run_at=run_at, repair_wait_seconds=60),
            id=f"reconciliation-{uuid.uuid4()}",
            task_queue=queue,
        )
        # The reconcile signal alone makes the order apply the fill the venue reported.
        repaired = await stack.wait_for(dropped.order_id, terminal(OrderStatus.FILLED))
        assert repaired.filled_quantity == D("4")
        report = await handle.result()  # skips the wait before the second look

        assert report.status is ReportStatus.DISCREPANCIES
        found = {(d.kind, d.symbol): d for d in report.discrepancies}
        assert set(found) == {
            (DiscrepancyKind.ORDER_CLOSED_AT_BROKER, "GOOGL"),
            (DiscrepancyKind.POSITION_MISMATCH, "GOOGL"),
            (DiscrepancyKind.POSITION_MISMATCH, "AAPL"),
        }
        order = found[(DiscrepancyKind.ORDER_CLOSED_AT_BROKER, "GOOGL")]
        assert order.order_id == dropped.order_id and order.repaired
        assert order.expected == {"status": "submitted", "filled_quantity": "0"}
        assert order.actual == {"status": "filled", "filled_quantity": "4"}
        googl = found[(DiscrepancyKind.POSITION_MISMATCH, "GOOGL")]
        assert googl.repaired and "not applied" in (googl.note or "")
        tampered = found[(DiscrepancyKind.POSITION_MISMATCH, "AAPL")]
        assert not tampered.repaired
        assert (tampered.expected["quantity"], tampered.actual["quantity"]) == ("11", "10")
        # Flagged, never "fixed" by writing numbers.
        assert (await stack.portfolio_now()).positions["AAPL"].quantity == D("11")

        rows = await db_pool.fetch(
            "SELECT kind, repaired, expected->>'quantity' AS quantity "
            "FROM reconciliation_discrepancies ORDER BY kind, symbol"
        )
        assert [(r["kind"], r["repaired"], r["quantity"]) for r in rows] == [
            ("order_closed_at_broker", True, None),
            ("position_mismatch", False, "11"),
            ("position_mismatch", True, "0"),
        ]
        status, summary = await db_pool.fetchrow(
            "SELECT status, summary::text FROM reconciliation_reports"
        )
        assert status == "discrepancies" and '"flagged": 1' in summary
        await replays(handle)

        # The same due instant again (a re-run, a second backfill): the report stands.
        again = await temporal_env.client.execute_workflow(
            ReconciliationWorkflow.run,
            ReconciliationInput(run_at=run_at),
            id=f"reconciliation-{uuid.uuid4()}",
            task_queue=queue,
        )
        assert again.report_id == report.report_id and len(again.discrepancies) == 3
        assert await db_pool.fetchval("SELECT count(*) FROM reconciliation_reports") == 1
        assert await db_pool.fetchval("SELECT count(*) FROM reconciliation_discrepancies") == 3


async def test_a_clean_book_reconciles_clean_and_a_holiday_not_at_all(temporal_env, db_pool):
    async with running_stack(temporal_env, db_pool) as stack:
        async with operations(stack, MarketSessions("calendar")) as queue:
            stack.feed.set_quote("KO", "60.00", "60.01")
            resting = await stack.place("KO", "5", order_type="limit", limit="55.00")
            await stack.wait_for(resting.order_id, terminal(OrderStatus.SUBMITTED))
            run = temporal_env.client.execute_workflow
            thanksgiving = datetime(2026, 11, 26, 21, 30, tzinfo=UTC)
            skipped = await run(
                ReconciliationWorkflow.run,
                ReconciliationInput(run_at=thanksgiving),
                id=f"reconciliation-{uuid.uuid4()}",
                task_queue=queue,
            )
            assert skipped.status is ReportStatus.SKIPPED
            assert await db_pool.fetchval("SELECT count(*) FROM reconciliation_reports") == 0
            clean = await run(
                ReconciliationWorkflow.run,
                ReconciliationInput(run_at=thanksgiving, force=True),
                id=f"reconciliation-{uuid.uuid4()}",
                task_queue=queue,
            )
            assert clean.status is ReportStatus.CLEAN and clean.discrepancies == []
            assert clean.broker == "paper_venue"
            await stack.handle(resting.order_id).signal(
                OrderWorkflow.cancel_request, CancelRequest(reason="end of test")
            )
            await stack.result(resting.order_id)


async def test_halt_cancels_every_open_order_and_refuses_new_ones_until_resumed(
    temporal_env, db_pool
):
    async with running_stack(temporal_env, db_pool) as stack, operations(stack) as queue:
        stack.feed.set_quote("MSFT", "400.00", "400.02")
        resting = [
            await stack.place("MSFT", "2", order_type="limit", limit=limit)
            for limit in ("390.00", "380.00")
        ]
        for order in resting:
            await stack.wait_for(order.order_id, terminal(OrderStatus.SUBMITTED))
        assert (await stack.portfolio_now()).reserved() > 0

        change = await set_trading_state(
            temporal_env.client,
            db_pool,
            stack.portfolio.id,
            TradingState.HALTED,
            "runaway strategy",
            task_queue=queue,
        )
        assert (change.previous, change.state) == (TradingState.ACTIVE, TradingState.HALTED)
        assert sorted(change.orders_to_cancel) == sorted(o.order_id for o in resting)
        for order in resting:
            await stack.wait_for(order.order_id, terminal(OrderStatus.CANCELED))
        assert await db_pool.fetchval(
            "SELECT count(*) FROM venue_orders WHERE status = 'canceled'"
        ) == len(resting)
        portfolio = await stack.portfolio_now()  # read back from the store: durable
        assert portfolio.trading_state is TradingState.HALTED
        assert portfolio.reservations == {} and portfolio.reserved() == 0

        refused = await stack.place("MSFT", "1")
        assert refused.status is OrderStatus.REJECTED
        assert refused.reject_code == "TRADING_HALTED"
        assert refused.reject_reason == "trading is halted"

        handle = temporal_env.client.get_workflow_handle(
            trading_state_workflow_id(stack.portfolio.id)
        )
        assert await handle.result() == len(resting)  # every cancel signal was delivered
        await replays(handle)

        resumed = await set_trading_state(
            temporal_env.client,
            db_pool,
            stack.portfolio.id,
            TradingState.ACTIVE,
            "fixed",
            task_queue=queue,
        )
        assert (resumed.previous, resumed.state) == (TradingState.HALTED, TradingState.ACTIVE)
        assert resumed.orders_to_cancel == []
        accepted = await stack.place("MSFT", "1")
        assert accepted.status is OrderStatus.ACCEPTED
        await stack.result(accepted.order_id)  # leave no order running behind the test


async def test_reducing_admits_a_sell_that_shrinks_the_position_and_refuses_a_buy(
    temporal_env, db_pool
):
    async with running_stack(temporal_env, db_pool) as stack, operations(stack) as queue:
        stack.feed.set_quote("NVDA", "120.00", "120.02")
        bought = await stack.place("NVDA", "10")
        await stack.wait_for(bought.order_id, terminal(OrderStatus.FILLED))

        change = await set_trading_state(
            temporal_env.client,
            db_pool,
            stack.portfolio.id,
            TradingState.REDUCING,
            "drawdown",
            task_queue=queue,
        )
        assert change.state is TradingState.REDUCING and change.orders_to_cancel == []

        sell = await stack.place("NVDA", "4", side="sell")
        assert sell.status is OrderStatus.ACCEPTED
        await stack.wait_for(sell.order_id, terminal(OrderStatus.FILLED))
        buy = await stack.place("NVDA", "1")
        assert (buy.status, buy.reject_code) == (OrderStatus.REJECTED, "RISK_LIMIT_EXCEEDED")
        assert "reducing" in (buy.reject_reason or "")
        flip = await stack.place("NVDA", "7", side="sell")  # would open a short of 1
        assert flip.status is OrderStatus.REJECTED
        assert (await stack.portfolio_now()).positions["NVDA"].quantity == D("6")

        await set_trading_state(
            temporal_env.client,
            db_pool,
            stack.portfolio.id,
            TradingState.ACTIVE,
            "done",
            task_queue=queue,
        )
        again = await stack.place("NVDA", "1")
        assert again.status is OrderStatus.ACCEPTED
        await stack.result(again.order_id)


async def test_snapshots_value_positions_at_their_marks_once_per_instant(temporal_env, db_pool):
    async with running_stack(temporal_env, db_pool) as stack:
        async with operations(stack, MarketSessions("calendar")) as queue:
            stack.feed.set_quote("AAPL", "189.98", "190.00")
            bought = await stack.place("AAPL", "10")
            filled = await stack.wait_for(bought.order_id, terminal(OrderStatus.FILLED))
            cash = D("100000.00") - D("1900.00") - filled.commission

            async def snapshot(at: datetime, kind=SnapshotKind.MANUAL):
                return await temporal_env.client.execute_workflow(
                    SnapshotWorkflow.run,
                    SnapshotInput(kind=kind, taken_at=at),
                    id=f"snapshot-{uuid.uuid4()}",
                    task_queue=queue,
                )

            first_at = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
            stack.feed.set_quote("AAPL", "200.00", "200.02")  # no bars: marked at the mid
            first = await snapshot(first_at)
            (row,) = first.snapshots
            assert first.written == 1
            assert row.cash == cash
            assert row.positions_value == D("2000.10") and row.equity == cash + D("2000.10")
            assert row.unrealized_pnl == D("100.10")
            assert row.return_pct == ((row.equity - 100000) / 1000).quantize(D("1e-8"))
            assert row.drawdown == 0
            again = await snapshot(first_at)
            assert again.written == 0 and again.snapshots == first.snapshots

            stack.feed.set_quote("AAPL", "180.00", "180.02")
            later = (await snapshot(first_at + timedelta(hours=1))).snapshots[0]
            peak = row.equity
            assert later.drawdown == ((peak - later.equity) / peak * 100).quantize(D("1e-8"))
            assert later.drawdown > 0
            earlier = (await snapshot(first_at - timedelta(hours=1))).snapshots[0]
            assert earlier.drawdown == 0  # only earlier snapshots set the peak

            sunday = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)
            closed = await snapshot(sunday, SnapshotKind.INTRADAY)
            assert (closed.skipped, closed.written) == ("market closed", 0)
            holiday = await snapshot(datetime(2026, 11, 26, 21, 0, tzinfo=UTC), SnapshotKind.EOD)
            assert holiday.skipped == "no session that day"

            stored = await list_snapshots(db_pool, stack.portfolio.id)
            assert [s.taken_at for s in stored] == [
                first_at - timedelta(hours=1),
                first_at,
                first_at + timedelta(hours=1),
            ]
            assert await list_snapshots(db_pool, stack.portfolio.id, kind=SnapshotKind.EOD) == []
            newest = await list_snapshots(db_pool, stack.portfolio.id, since=first_at, limit=1)
            assert [s.taken_at for s in newest] == [first_at + timedelta(hours=1)]
