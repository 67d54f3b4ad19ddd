"""Operations workflows: end-of-day reconciliation, portfolio snapshots and the kill switch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, FailureError

from workflows.order import OrderWorkflow

with workflow.unsafe.imports_passed_through():
    from activities.operations_activities import OperationsActivities
    from contracts.payloads import (
        CancelRequest,
        Discrepancy,
        DiscrepancyKind,
        FinishReconciliationInput,
        ReconciliationInput,
        ReconciliationReport,
        RecordTradingStateInput,
        ReportStatus,
        SnapshotInput,
        SnapshotKind,
        SnapshotResult,
        TradingStateChange,
        TradingStateRequest,
        TradingStateWorkflowInput,
        report_id_for,
        workflow_id_for,
    )
    from domain.portfolio import TradingState
    from workflows.policies import BROKER_SWEEP, QUICK, STORE, call

# Set by the scheduler on every run it starts: the instant the run was due. A backfilled or
# caught-up run starts later than that, and must still be about the instant it was due.
SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
# How many signals are sent at once: halting a portfolio with thousands of open orders
# must not build one enormous workflow task.
SIGNAL_BATCH = 100
# Patch id (workflow.patched): reconciliation books the broker's executions of orders closed
# in the books (whose workflows have ended) before it compares; older runs replay without.
BOOK_CLOSED_ORDERS = "reconcile-books-closed-order-fills"


def scheduled_time() -> datetime:
    """When this run was due: the schedule's time, or the start time when started by hand."""
    info = workflow.info()
    due = info.typed_search_attributes.get(SCHEDULED_START_TIME)
    return due if due is not None else info.workflow_start_time


async def _signal_order(order_id: UUID, signal: Callable[..., Any], *args: object) -> bool:
    """Signal one order's workflow; False when it cannot take it (it has closed meanwhile:
    a finished order needs neither a cancel nor a re-read)."""
    handle = workflow.get_external_workflow_handle(workflow_id_for(order_id))
    try:
        await handle.signal(signal, *args)
    except FailureError as err:
        workflow.logger.info("order %s did not take %s: %s", order_id, signal, err)
        return False
    return True


# -- snapshots -----------------------------------------------------------------------------


@workflow.defn(name="SnapshotWorkflow")
class SnapshotWorkflow:
    """Values every portfolio at one instant and stores it once per (portfolio, instant,
    kind). Intraday snapshots are taken only while the market is open, end-of-day ones only
    on trading days; a manual one always."""

    @workflow.run
    async def run(self, input: SnapshotInput) -> SnapshotResult:
        taken_at = input.taken_at or scheduled_time()
        if input.kind is not SnapshotKind.MANUAL:
            day = await call(OperationsActivities.market_day, taken_at, QUICK)
            if input.kind is SnapshotKind.INTRADAY and not day.open:
                return SnapshotResult(taken_at, input.kind, skipped="market closed")
            if input.kind is SnapshotKind.EOD and not day.trading_day:
                return SnapshotResult(taken_at, input.kind, skipped="no session that day")
        request = SnapshotInput(kind=input.kind, taken_at=taken_at)
        return await call(OperationsActivities.take_snapshots, request, STORE)


# -- reconciliation ------------------------------------------------------------------------


@workflow.defn(name="ReconciliationWorkflow")
class ReconciliationWorkflow:
    """Compares the store with the broker, records a report with every discrepancy, has the
    order workflows re-read the broker where that repairs it, and flags the rest. An order
    closed in the books whose broker reports executions the books lack has no workflow left
    to re-read: those executions are booked here, once each, and flagged (a discrepancy).

    Positions are never corrected by writing numbers: a position that disagrees is only
    reported, and counts as repaired only when applying an order's missed executions made
    it agree.
    """

    @workflow.run
    async def run(self, input: ReconciliationInput) -> ReconciliationReport:
        run_at = input.run_at or scheduled_time()
        report_id = report_id_for(run_at)
        if not input.force:
            day = await call(OperationsActivities.market_day, run_at, QUICK)
            if not day.trading_day:
                return ReconciliationReport(report_id, run_at, ReportStatus.SKIPPED)
        report = await call(
            OperationsActivities.begin_reconciliation,
            ReconciliationReport(report_id, run_at, ReportStatus.RUNNING),
            STORE,
        )
        if report.status in (ReportStatus.CLEAN, ReportStatus.DISCREPANCIES):
            return report  # this instant was reconciled by an earlier run
        try:
            booked: list[Discrepancy] = []
            if workflow.patched(BOOK_CLOSED_ORDERS):
                booked = await self._book_closed_orders(report)
            found = await self._compare(report)
            found = booked + await self._repair(report, found, input.repair_wait_seconds)
        except ActivityError as err:
            failed = FinishReconciliationInput(report_id, ReportStatus.FAILED, error=str(err))
            await call(OperationsActivities.finish_reconciliation, failed, STORE)
            raise
        status = ReportStatus.DISCREPANCIES if found else ReportStatus.CLEAN
        done = FinishReconciliationInput(report_id, status, found)
        return await call(OperationsActivities.finish_reconciliation, done, STORE)

    async def _book_closed_orders(self, report: ReconciliationReport) -> list[Discrepancy]:
        """Executions the broker reports for orders closed in the books: no workflow is left
        to apply them, so they are booked here (once, by execution id, flagged for
        operators), each order a discrepancy. Done before the comparison, so the positions
        it compares already include them."""
        booked = await call(OperationsActivities.book_closed_order_fills, report, BROKER_SWEEP)
        return booked.discrepancies

    async def _compare(self, report: ReconciliationReport) -> list[Discrepancy]:
        found = await call(OperationsActivities.compare_with_broker, report, BROKER_SWEEP)
        return found.discrepancies

    async def _repair(
        self, report: ReconciliationReport, found: list[Discrepancy], wait_seconds: int
    ) -> list[Discrepancy]:
        """Tell every order with a repairable discrepancy to re-read the broker, give them
        time, compare again and mark repaired what no longer differs."""
        orders = sorted({d.order_id for d in found if d.kind.repairable and d.order_id})
        if not orders:
            return found
        told = 0
        for start in range(0, len(orders), SIGNAL_BATCH):
            batch = orders[start : start + SIGNAL_BATCH]
            told += sum(
                await asyncio.gather(*(_signal_order(o, OrderWorkflow.reconcile) for o in batch))
            )
        workflow.logger.info("reconciliation: told %d of %d orders to re-read", told, len(orders))
        await workflow.sleep(timedelta(seconds=wait_seconds))
        # Only what was found first is judged: a difference that shows up now for the first
        # time is most likely an order trading right now, and tomorrow's run will see it.
        remaining = {d.key for d in await self._compare(report)}
        for discrepancy in found:
            judged = discrepancy.kind.repairable or (
                discrepancy.kind is DiscrepancyKind.POSITION_MISMATCH
            )
            if judged and discrepancy.key not in remaining:
                discrepancy.repaired = True
                discrepancy.note = _join(
                    discrepancy.note,
                    "resolved: the order workflow applied what the broker reported"
                    if discrepancy.kind.repairable
                    else "resolved once the orders' missed executions were applied",
                )
            elif discrepancy.kind.repairable:
                discrepancy.note = _join(discrepancy.note, "told to re-read; still differs")
        return found


def _join(note: str | None, more: str) -> str:
    return more if not note else f"{note}; {more}"


# -- kill switch ---------------------------------------------------------------------------


@workflow.defn(name="TradingStateWorkflow")
class TradingStateWorkflow:
    """The kill switch of one portfolio (`trading-state-{portfolio_id}`), driven by the
    `set_state` update (with update-with-start).

    Each request records the state in one transaction; HALTED then cancels every order that
    was open at that moment, by `cancel_request` signals sent from here. The list is in the
    history, so a worker crash halfway resumes the signals where they stopped. Requests are
    applied one at a time, in order. The workflow ends once it has nothing left to do; the
    next request starts a new run under the same id.
    """

    @workflow.init
    def __init__(self, input: TradingStateWorkflowInput) -> None:
        self._portfolio_id = input.portfolio_id
        self._serial = asyncio.Lock()
        self._to_cancel: list[tuple[UUID, CancelRequest]] = []

    @workflow.run
    async def run(self, input: TradingStateWorkflowInput) -> int:
        signaled = 0
        while True:
            await workflow.wait_condition(
                lambda: bool(self._to_cancel) or workflow.all_handlers_finished()
            )
            if not self._to_cancel:
                return signaled
            batch = self._to_cancel[:SIGNAL_BATCH]
            del self._to_cancel[:SIGNAL_BATCH]
            sent = await asyncio.gather(
                *(
                    _signal_order(order_id, OrderWorkflow.cancel_request, cancel)
                    for order_id, cancel in batch
                )
            )
            signaled += sum(sent)

    @workflow.update(name="set_state")
    async def set_state(self, request: TradingStateRequest) -> TradingStateChange:
        async with self._serial:
            change = await call(
                OperationsActivities.record_trading_state,
                RecordTradingStateInput(self._portfolio_id, request.state, request.reason),
                STORE,
            )
        cancel = CancelRequest(reason=f"trading halted: {request.reason}")
        self._to_cancel.extend((order_id, cancel) for order_id in change.orders_to_cancel)
        return change

    @set_state.validator
    def _validate(self, request: TradingStateRequest) -> None:
        TradingState(request.state)
        if not request.reason.strip():
            raise ValueError("a trading state change needs a reason")

    @workflow.query(name="pending_cancels")
    def pending_cancels(self) -> int:
        return len(self._to_cancel)


WORKFLOWS = [SnapshotWorkflow, ReconciliationWorkflow, TradingStateWorkflow]

__all__ = [
    "WORKFLOWS",
    "ReconciliationWorkflow",
    "SnapshotWorkflow",
    "TradingStateWorkflow",
    "scheduled_time",
]
