"""End-of-day reconciliation repairs a fill of an order whose workflow has closed.

On the time-skipping server, with the real PostgreSQL, the real paper venue and outbox: the
books close an order (its workflow ended) while the venue keeps it working and fills it, and
the fill's event is lost. No workflow is left to re-read the broker; reconciliation books the
venue's executions itself, once by execution id, flagged for operators like a late event,
and reports the order as a discrepancy.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from activities.calendar.sessions import MarketSessions
from activities.operations_activities import OperationsActivities
from activities.store import ledger
from contracts.payloads import (
    DiscrepancyKind,
    ReconciliationInput,
    RecordStatusInput,
    ReportStatus,
    order_id_for,
)
from domain.orders import OrderStatus
from workflows.operations import ReconciliationWorkflow

from .harness import running_stack, terminal
from .test_operations import QUIET, losing_fills_of, operations, replays, venue_status

pytestmark = pytest.mark.integration


async def test_reconciliation_books_the_fill_of_an_order_closed_in_the_books_once_and_flags_it(
    temporal_env, db_pool
):
    lost: set[str] = set()
    stack = running_stack(temporal_env, db_pool, deliver=losing_fills_of(lost), options=QUIET)
    async with stack as stack, operations(stack) as queue:
        stack.feed.set_quote("AAPL", "199.98", "200.00")
        lost.add(str(order_id_for(stack.portfolio.id, "closed-too-early")))
        placed = await stack.place(
            "AAPL", "10", order_type="limit", limit="190.00", client_order_id="closed-too-early"
        )
        await stack.wait_for(placed.order_id, terminal(OrderStatus.SUBMITTED))
        # The books close the order while the venue still works it (what an outage did
        # under older code), and its workflow is gone.
        await stack.handle(placed.order_id).terminate("closed under older code")
        await ledger.record_status(
            db_pool,
            RecordStatusInput(placed.order_id, OrderStatus.CANCELED, reason="outage"),
            datetime.now(UTC),
        )
        cash_before = (await stack.portfolio_now()).cash
        stack.feed.set_quote("AAPL", "189.98", "190.00")  # the venue fills; the event is lost
        assert await venue_status(stack, placed.order_id) is OrderStatus.FILLED
        theirs = await stack.venue.get_order(str(placed.order_id))
        assert (await stack.order(placed.order_id)).filled_quantity == 0  # the books lack it

        run_at = datetime.now(UTC).replace(microsecond=0)
        handle = await temporal_env.client.start_workflow(
            ReconciliationWorkflow.run,
            ReconciliationInput(run_at=run_at, force=True, repair_wait_seconds=60),
            id=f"reconciliation-{uuid.uuid4()}",
            task_queue=queue,
        )
        report = await handle.result()

        # Counted as a discrepancy, repaired; the positions compared after it agree.
        assert report.status is ReportStatus.DISCREPANCIES
        assert [(d.kind, d.symbol, d.order_id) for d in report.discrepancies] == [
            (DiscrepancyKind.ORDER_FILLS_BEHIND, "AAPL", placed.order_id)
        ]
        (found,) = report.discrepancies
        assert found.repaired
        assert found.expected == {"status": "canceled", "filled_quantity": "0"}
        assert found.actual == {"status": "filled", "filled_quantity": "10"}
        assert "flagged for operators" in (found.note or "")
        # Applied to the ledger: once per execution id, and the books balance.
        ids = {e.execution_id for e in theirs.executions}
        rows = await db_pool.fetch(
            "SELECT execution_id FROM executions WHERE order_id = $1", placed.order_id
        )
        assert sorted(r["execution_id"] for r in rows) == sorted(ids)
        paid = await db_pool.fetchval(
            "SELECT sum(notional + commission) FROM executions WHERE order_id = $1",
            placed.order_id,
        )
        portfolio = await stack.portfolio_now()
        assert portfolio.positions["AAPL"].quantity == D("10")
        assert portfolio.cash == cash_before - paid and paid >= D("1900.00")
        assert portfolio.ledger_imbalance() == 0 and portfolio.reservations == {}
        order = await stack.order(placed.order_id)
        assert order.status is OrderStatus.CANCELED and order.filled_quantity == D("10")
        # Flagged for operators the way a late event is, with the report that found it.
        flagged = await db_pool.fetch(
            "SELECT dedupe_key, order_id, applied, note FROM late_broker_events"
        )
        assert sorted(r["dedupe_key"] for r in flagged) == sorted(ids)
        assert all(r["order_id"] == placed.order_id and r["applied"] for r in flagged)
        assert all(r["note"].startswith(f"reconciliation {report.report_id}: ") for r in flagged)
        stored = await db_pool.fetch(
            "SELECT kind, order_id, repaired FROM reconciliation_discrepancies"
        )
        assert [(r["kind"], r["order_id"], r["repaired"]) for r in stored] == [
            ("order_fills_behind", placed.order_id, True)
        ]
        await replays(handle)

        # The activity run again for the same report (a retry): the same discrepancy, and
        # nothing booked a second time.
        activities = OperationsActivities(
            db_pool, stack.venue, stack.feed, MarketSessions("always_open")
        )
        again = await activities.book_closed_order_fills(report)
        assert [(d.kind, d.order_id, d.expected, d.repaired) for d in again.discrepancies] == [
            (found.kind, found.order_id, found.expected, True)
        ]
        # The next day's run: nothing missing any more, nothing booked twice.
        next_day = await temporal_env.client.execute_workflow(
            ReconciliationWorkflow.run,
            ReconciliationInput(run_at=run_at + timedelta(days=1), force=True),
            id=f"reconciliation-{uuid.uuid4()}",
            task_queue=queue,
        )
        assert next_day.status is ReportStatus.CLEAN, next_day.discrepancies
        assert await db_pool.fetchval(
            "SELECT count(*) FROM executions WHERE order_id = $1", placed.order_id
        ) == len(ids)
        assert await db_pool.fetchval("SELECT count(*) FROM late_broker_events") == len(ids)
        assert (await stack.portfolio_now()).cash == portfolio.cash
