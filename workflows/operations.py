"""Operations workflows: end-of-day reconciliation, portfolio snapshots and the kill switch."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from uuid import UUID, uuid5

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from domain.portfolio import TradingState
    from workflows.contracts import CancelRequest, workflow_id_for
    from workflows.order import STORE, CallPolicy
    from workflows.order import _call as call

# Set by the scheduler on every run it starts: the instant the run was due. A backfilled or
# caught-up run starts later than that, and must still be about the instant it was due.
SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
REPORT_ID_NAMESPACE = UUID("3d0f8a52-6c1e-4b8e-a7f4-2e9c5b1d7a30")
# How many signals are sent at once: halting a portfolio with thousands of open orders
# must not build one enormous workflow task.
SIGNAL_BATCH = 100

QUICK = CallPolicy(
    timedelta(seconds=30),
    RetryPolicy(maximum_interval=timedelta(seconds=30)),
    schedule_to_close=timedelta(minutes=10),
)
# Reading every open order and position at the broker can take a while (Alpaca pages and
# rate-limits); a broker that is away for an hour fails the run, and the report says so.
BROKER_SWEEP = CallPolicy(
    timedelta(minutes=5),
    RetryPolicy(maximum_interval=timedelta(minutes=1)),
    schedule_to_close=timedelta(hours=1),
)


def scheduled_time() -> datetime:
    """When this run was due: the schedule's time, or the start time when started by hand."""
    info = workflow.info()
    due = info.typed_search_attributes.get(SCHEDULED_START_TIME)
    return due if due is not None else info.workflow_start_time


# -- payloads ------------------------------------------------------------------------------


@dataclass
class MarketDay:
    """What the exchange calendar says about one instant."""

    trading_day: bool  # the exchange holds a session on that New York date
    open: bool  # the session is open at that instant


class SnapshotKind(StrEnum):
    INTRADAY = "intraday"
    EOD = "eod"
    MANUAL = "manual"


@dataclass
class SnapshotInput:
    kind: SnapshotKind = SnapshotKind.INTRADAY
    taken_at: datetime | None = None  # None: when the schedule meant the run for


@dataclass
class PortfolioSnapshot:
    """A portfolio valued at one instant; amounts exact, percentages with 8 decimals."""

    portfolio_id: UUID
    taken_at: datetime
    kind: SnapshotKind
    cash: Decimal
    positions_value: Decimal
    equity: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    return_pct: Decimal  # equity against the initial capital, in percent
    drawdown: Decimal  # below the highest equity of earlier snapshots, in percent (>= 0)


@dataclass
class SnapshotResult:
    taken_at: datetime
    kind: SnapshotKind
    snapshots: list[PortfolioSnapshot] = field(default_factory=list)
    written: int = 0  # new rows; a re-run of the same instant writes none
    skipped: str | None = None  # why nothing was taken (market closed, holiday)


class DiscrepancyKind(StrEnum):
    # The store holds a different quantity than the broker (summed over portfolios).
    POSITION_MISMATCH = "position_mismatch"
    # Open in the store, closed (filled, canceled, ...) at the broker: events were lost.
    ORDER_CLOSED_AT_BROKER = "order_closed_at_broker"
    # Open at both, the broker has filled more than the store applied.
    ORDER_FILLS_BEHIND = "order_fills_behind"
    # The store has applied more than the broker reports filled: never legitimate.
    ORDER_FILLS_AHEAD = "order_fills_ahead"
    # Submitted according to the store, unknown at the broker.
    ORDER_MISSING_AT_BROKER = "order_missing_at_broker"
    # Working at the broker, not open in the store (closed there, or never ours).
    ORDER_OPEN_ONLY_AT_BROKER = "order_open_only_at_broker"

    @property
    def repairable(self) -> bool:
        """The order workflow fixes these itself once told to re-read the broker: it
        applies the missed executions and status, idempotently by execution id."""
        return self in (DiscrepancyKind.ORDER_CLOSED_AT_BROKER, DiscrepancyKind.ORDER_FILLS_BEHIND)


@dataclass
class Discrepancy:
    """One difference between the store and the broker; amounts as strings (JSON)."""

    kind: DiscrepancyKind
    symbol: str | None = None
    order_id: UUID | None = None
    portfolio_id: UUID | None = None
    expected: dict[str, str] = field(default_factory=dict)  # the store's view
    actual: dict[str, str] = field(default_factory=dict)  # the broker's view
    repaired: bool = False
    note: str | None = None

    @property
    def key(self) -> tuple[str, str | None, UUID | None]:
        return (self.kind.value, self.symbol, self.order_id)


class ReportStatus(StrEnum):
    RUNNING = "running"
    CLEAN = "clean"
    DISCREPANCIES = "discrepancies"
    FAILED = "failed"
    SKIPPED = "skipped"  # not a trading day: no report is written


@dataclass
class ReconciliationInput:
    run_at: datetime | None = None  # None: when the schedule meant the run for
    force: bool = False  # run on a day without a session too (an operator's manual run)
    # How long the order workflows get to apply what they missed before the check that
    # marks their discrepancies repaired.
    repair_wait_seconds: int = 60


@dataclass
class ReconciliationReport:
    report_id: UUID
    run_at: datetime
    status: ReportStatus
    broker: str = ""
    discrepancies: list[Discrepancy] = field(default_factory=list)
    finished_at: datetime | None = None


@dataclass
class FinishReconciliationInput:
    report_id: UUID
    status: ReportStatus
    discrepancies: list[Discrepancy] = field(default_factory=list)
    error: str | None = None


@dataclass
class TradingStateRequest:
    state: TradingState
    reason: str


@dataclass
class RecordTradingStateInput:
    portfolio_id: UUID
    state: TradingState
    reason: str


@dataclass
class TradingStateChange:
    """A portfolio's trading state after a request, and the open orders it is canceling."""

    portfolio_id: UUID
    previous: TradingState
    state: TradingState
    reason: str
    orders_to_cancel: list[UUID] = field(default_factory=list)


def report_id_for(run_at: datetime) -> UUID:
    """One report per due instant, whichever run (re-run, backfill) gets there."""
    return uuid5(REPORT_ID_NAMESPACE, run_at.astimezone(UTC).isoformat())


async def _signal_order(order_id: UUID, signal: str, *args: object) -> bool:
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
            day: MarketDay = await call("market_day", taken_at, MarketDay, QUICK)
            if input.kind is SnapshotKind.INTRADAY and not day.open:
                return SnapshotResult(taken_at, input.kind, skipped="market closed")
            if input.kind is SnapshotKind.EOD and not day.trading_day:
                return SnapshotResult(taken_at, input.kind, skipped="no session that day")
        request = SnapshotInput(kind=input.kind, taken_at=taken_at)
        return await call("take_snapshots", request, SnapshotResult, STORE)


# -- reconciliation ------------------------------------------------------------------------


@workflow.defn(name="ReconciliationWorkflow")
class ReconciliationWorkflow:
    """Compares the store with the broker, records a report with every discrepancy, has the
    order workflows re-read the broker where that repairs it, and flags the rest.

    Positions are never corrected by writing numbers: a position that disagrees is only
    reported, and counts as repaired only when applying an order's missed executions made
    it agree.
    """

    @workflow.run
    async def run(self, input: ReconciliationInput) -> ReconciliationReport:
        run_at = input.run_at or scheduled_time()
        report_id = report_id_for(run_at)
        if not input.force:
            day: MarketDay = await call("market_day", run_at, MarketDay, QUICK)
            if not day.trading_day:
                return ReconciliationReport(report_id, run_at, ReportStatus.SKIPPED)
        report: ReconciliationReport = await call(
            "begin_reconciliation",
            ReconciliationReport(report_id, run_at, ReportStatus.RUNNING),
            ReconciliationReport,
            STORE,
        )
        if report.status in (ReportStatus.CLEAN, ReportStatus.DISCREPANCIES):
            return report  # this instant was reconciled by an earlier run
        try:
            found = await self._compare(report)
            found = await self._repair(report, found, input.repair_wait_seconds)
        except ActivityError as err:
            failed = FinishReconciliationInput(report_id, ReportStatus.FAILED, error=str(err))
            await call("finish_reconciliation", failed, ReconciliationReport, STORE)
            raise
        status = ReportStatus.DISCREPANCIES if found else ReportStatus.CLEAN
        done = FinishReconciliationInput(report_id, status, found)
        return await call("finish_reconciliation", done, ReconciliationReport, STORE)

    async def _compare(self, report: ReconciliationReport) -> list[Discrepancy]:
        found: ReconciliationReport = await call(
            "compare_with_broker", report, ReconciliationReport, BROKER_SWEEP
        )
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
            told += sum(await asyncio.gather(*(_signal_order(o, "reconcile") for o in batch)))
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


@dataclass
class TradingStateWorkflowInput:
    portfolio_id: UUID


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
                *(_signal_order(order_id, "cancel_request", cancel) for order_id, cancel in batch)
            )
            signaled += sum(sent)

    @workflow.update(name="set_state")
    async def set_state(self, request: TradingStateRequest) -> TradingStateChange:
        async with self._serial:
            change: TradingStateChange = await call(
                "record_trading_state",
                RecordTradingStateInput(self._portfolio_id, request.state, request.reason),
                TradingStateChange,
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


def trading_state_workflow_id(portfolio_id: UUID) -> str:
    return f"trading-state-{portfolio_id}"


WORKFLOWS = [SnapshotWorkflow, ReconciliationWorkflow, TradingStateWorkflow]

__all__ = [
    "WORKFLOWS",
    "Discrepancy",
    "DiscrepancyKind",
    "MarketDay",
    "PortfolioSnapshot",
    "ReconciliationInput",
    "ReconciliationReport",
    "ReconciliationWorkflow",
    "ReportStatus",
    "SnapshotInput",
    "SnapshotKind",
    "SnapshotResult",
    "SnapshotWorkflow",
    "TradingStateChange",
    "TradingStateRequest",
    "TradingStateWorkflow",
    "TradingStateWorkflowInput",
    "report_id_for",
    "trading_state_workflow_id",
]
