"""Operations activities (reconciliation, snapshots, kill switch) and the calls they share.

The store reads and client calls at the end are what the API and the operator commands use.

Each activity may run more than once (a retry, a worker crash after the work but before
the completion was recorded); each docstring says why running it twice is harmless.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from activities.market_data import MarketDataSource
from activities.orders import BrokerOrderNotFoundError
from activities.store import OPEN_STATUSES, NotFoundError, UnitOfWork, snapshot_from_row
from domain.market import SymbolNotFoundError, Timeframe
from domain.orders import OrderStatus
from domain.portfolio import Portfolio, TradingState
from workflows.contracts import TASK_QUEUE, BrokerOrderState, OrderSnapshot, workflow_id_for
from workflows.operations import (
    Discrepancy,
    DiscrepancyKind,
    FinishReconciliationInput,
    MarketDay,
    PortfolioSnapshot,
    ReconciliationReport,
    RecordTradingStateInput,
    ReportStatus,
    SnapshotInput,
    SnapshotKind,
    SnapshotResult,
    TradingStateChange,
    TradingStateRequest,
    TradingStateWorkflow,
    TradingStateWorkflowInput,
    trading_state_workflow_id,
)

log = logging.getLogger(__name__)

NEW_YORK = ZoneInfo("America/New_York")
PERCENT = Decimal("0.00000001")  # the scale of return_pct and drawdown
# Orders the broker has been told about; pending and accepted ones may not have reached it.
AT_BROKER = (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING_CANCEL)
ZERO = Decimal(0)


class ReconcilableBroker(Protocol):
    """What reconciliation reads at a broker; the paper venue and Alpaca provide it."""

    async def get_order(self, client_order_id: str) -> BrokerOrderState: ...
    async def positions(self) -> dict[str, Decimal]: ...
    async def open_orders(self) -> list[BrokerOrderState]: ...


class Calendar(Protocol):
    def is_open(self, at: datetime) -> bool: ...
    def is_trading_day(self, day: date) -> bool: ...


def plain(value: Decimal) -> str:
    """A decimal as plain digits for JSON: 100, 0.5, -3.25."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def broker_name_of(broker: object) -> str:
    """`PaperVenue` -> `paper_venue`, `AlpacaBroker` -> `alpaca_broker`: the report's broker."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(broker).__name__).lower()


# -- activities ----------------------------------------------------------------------------


class OperationsActivities:
    """The activities of the operations workflows, bound to the resources they use."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        broker: ReconcilableBroker,
        market_data: MarketDataSource,
        sessions: Calendar,
        broker_name: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.pool = pool
        self.broker = broker
        self.market_data = market_data
        self.sessions = sessions
        self.broker_name = broker_name or broker_name_of(broker)
        self.clock = clock

    @activity.defn(name="market_day")
    async def market_day(self, at: datetime) -> MarketDay:
        """Read-only: what the exchange calendar says about `at` (its New York date)."""
        day = at.astimezone(NEW_YORK).date()
        return MarketDay(
            trading_day=self.sessions.is_trading_day(day), open=self.sessions.is_open(at)
        )

    # -- snapshots ---------------------------------------------------------------------------

    @activity.defn(name="take_snapshots")
    async def take_snapshots(self, input: SnapshotInput) -> SnapshotResult:
        """Value every portfolio at `input.taken_at` and store one row per portfolio.

        Idempotent: (portfolio, taken_at, kind) is unique in portfolio_snapshots; a second
        run inserts nothing and returns the rows the first one wrote.
        """
        taken_at = input.taken_at or self.clock()
        async with UnitOfWork(self.pool) as uow:  # read-only: rolled back on exit
            ids = await uow.conn.fetch("SELECT id FROM portfolios ORDER BY created_at, id")
            portfolios = [await uow.portfolios.get(row["id"]) for row in ids]
        symbols = {p.symbol for portfolio in portfolios for p in portfolio.open_positions()}
        marks = await self._marks(sorted(symbols), taken_at)
        result = SnapshotResult(taken_at=taken_at, kind=input.kind)
        for portfolio in portfolios:
            snapshot, created = await self._store_snapshot(portfolio, marks, taken_at, input.kind)
            result.snapshots.append(snapshot)
            result.written += created
        activity.logger.info("snapshots at %s: %d written", taken_at, result.written)
        return result

    async def _marks(self, symbols: list[str], at: datetime) -> dict[str, Decimal]:
        """A price per symbol at `at`: the close of the one-minute bar at `at` (so a snapshot
        caught up after downtime is valued at its own instant), else the current quote's
        mid. A symbol without either keeps its position at cost."""
        marks: dict[str, Decimal] = {}
        for symbol in symbols:
            try:
                bars = await self.market_data.get_bars(symbol, Timeframe.MINUTE_1, 1, end=at)
                if bars:
                    marks[symbol] = bars[-1].close
                    continue
                quote = await self.market_data.get_quote(symbol)
                marks[symbol] = (quote.bid + quote.ask) / 2
            except (SymbolNotFoundError, LookupError) as err:
                log.warning("snapshot: no price for %s (%s); valued at cost", symbol, err)
        return marks

    async def _store_snapshot(
        self,
        portfolio: Portfolio,
        marks: dict[str, Decimal],
        taken_at: datetime,
        kind: SnapshotKind,
    ) -> tuple[PortfolioSnapshot, bool]:
        portfolio.mark(marks)
        equity = portfolio.get_total_value()
        # The peak is what earlier instants had when this one is written: a backfill that
        # writes an older instant later does not rewrite the drawdowns after it.
        async with self.pool.acquire() as conn, conn.transaction():
            peak = await conn.fetchval(
                "SELECT max(equity) FROM portfolio_snapshots "
                "WHERE portfolio_id = $1 AND taken_at < $2",
                portfolio.id,
                taken_at,
            )
            peak = equity if peak is None else max(peak, equity)
            drawdown = (peak - equity) / peak * 100 if peak > 0 else ZERO
            row = await conn.fetchrow(
                """
                INSERT INTO portfolio_snapshots (portfolio_id, taken_at, kind, cash,
                    positions_value, equity, realized_pnl, unrealized_pnl, return_pct, drawdown)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                ON CONFLICT ON CONSTRAINT portfolio_snapshots_once DO NOTHING
                RETURNING *
                """,
                portfolio.id,
                taken_at,
                kind.value,
                portfolio.cash,
                portfolio.positions_value(),
                equity,
                portfolio.realized_pnl,
                portfolio.unrealized_pnl(),
                portfolio.get_return_percentage().quantize(PERCENT),
                drawdown.quantize(PERCENT),
            )
            created = row is not None
            if row is None:  # taken by an earlier run: that one stands
                row = await conn.fetchrow(
                    "SELECT * FROM portfolio_snapshots "
                    "WHERE portfolio_id = $1 AND taken_at = $2 AND kind = $3",
                    portfolio.id,
                    taken_at,
                    kind.value,
                )
        assert row is not None
        return _snapshot_from_row(row), created

    # -- reconciliation ----------------------------------------------------------------------

    @activity.defn(name="begin_reconciliation")
    async def begin_reconciliation(self, report: ReconciliationReport) -> ReconciliationReport:
        """Open the report of one due instant, or return it as it is.

        Idempotent: the report id is derived from the instant (INSERT ... ON CONFLICT DO
        NOTHING), so a re-run finds the first run's report: finished, it is returned and
        nothing is compared again; failed, it is reopened for this run.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO reconciliation_reports (id, run_at, broker, status)
                VALUES ($1, $2, $3, 'running') ON CONFLICT (id) DO NOTHING
                """,
                report.report_id,
                report.run_at,
                self.broker_name,
            )
            await conn.execute(
                """
                UPDATE reconciliation_reports
                SET status = 'running', finished_at = NULL, broker = $2
                WHERE id = $1 AND status = 'failed'
                """,
                report.report_id,
                self.broker_name,
            )
        return await _load_report(self.pool, report.report_id)

    @activity.defn(name="compare_with_broker")
    async def compare_with_broker(self, report: ReconciliationReport) -> ReconciliationReport:
        """Every difference between the store and the broker: positions summed per symbol
        over the portfolios, and open orders both ways. Read-only.

        The store is read first: a fill landing meanwhile makes the broker look ahead, which
        is the repairable direction (and the check after the repair sees it settled).
        """
        async with self.pool.acquire() as conn:
            order_rows = await conn.fetch(
                "SELECT * FROM orders WHERE status = ANY($1::text[]) ORDER BY created_at, id",
                list(OPEN_STATUSES),
            )
            position_rows = await conn.fetch(
                "SELECT portfolio_id, symbol, quantity FROM positions WHERE quantity <> 0"
            )
        broker_open = {o.client_order_id: o for o in await self.broker.open_orders()}
        broker_positions = await self.broker.positions()

        found: list[Discrepancy] = []
        unapplied: dict[str, Decimal] = defaultdict(Decimal)  # broker fills the store lacks
        behind: dict[str, list[str]] = defaultdict(list)
        for order in map(snapshot_from_row, order_rows):
            discrepancy = await self._compare_order(
                order, broker_open.pop(str(order.order_id), None)
            )
            if discrepancy is None:
                continue
            found.append(discrepancy)
            if discrepancy.kind.repairable:
                missing = Decimal(discrepancy.actual["filled_quantity"]) - order.filled_quantity
                unapplied[order.symbol] += missing * order.side.sign
                behind[order.symbol].append(str(order.order_id))
        found += await self._orders_open_only_at_broker(list(broker_open.values()))

        held: dict[str, Decimal] = defaultdict(Decimal)
        holders: dict[str, set[UUID]] = defaultdict(set)
        for row in position_rows:
            held[row["symbol"]] += row["quantity"]
            holders[row["symbol"]].add(row["portfolio_id"])
        for symbol in sorted(set(held) | set(broker_positions)):
            ours, theirs = held.get(symbol, ZERO), broker_positions.get(symbol, ZERO)
            if ours == theirs:
                continue
            note = None
            if unapplied.get(symbol) and ours + unapplied[symbol] == theirs:
                note = "explained by executions the store has not applied: orders " + ", ".join(
                    behind[symbol]
                )
            only = holders[symbol]
            found.append(
                Discrepancy(
                    kind=DiscrepancyKind.POSITION_MISMATCH,
                    symbol=symbol,
                    portfolio_id=next(iter(only)) if len(only) == 1 else None,
                    expected={"quantity": plain(ours), "portfolios": str(len(only))},
                    actual={"quantity": plain(theirs)},
                    note=note,
                )
            )
        return ReconciliationReport(
            report.report_id, report.run_at, report.status, self.broker_name, found
        )

    async def _compare_order(
        self, order: OrderSnapshot, at_broker: BrokerOrderState | None
    ) -> Discrepancy | None:
        """The discrepancy of one order open in the store, if any; `at_broker` is the
        broker's open order with the same client order id."""
        if at_broker is None:
            if order.status not in AT_BROKER:
                return None  # not submitted yet: the broker need not know it
            try:
                at_broker = await self.broker.get_order(str(order.order_id))
            except BrokerOrderNotFoundError:
                return _order_discrepancy(
                    DiscrepancyKind.ORDER_MISSING_AT_BROKER, order, {"status": "unknown"}
                )
        actual = {
            "status": at_broker.status.value,
            "filled_quantity": plain(at_broker.filled_quantity),
        }
        if at_broker.status.is_terminal:
            return _order_discrepancy(DiscrepancyKind.ORDER_CLOSED_AT_BROKER, order, actual)
        if at_broker.filled_quantity > order.filled_quantity:
            return _order_discrepancy(DiscrepancyKind.ORDER_FILLS_BEHIND, order, actual)
        if at_broker.filled_quantity < order.filled_quantity:
            return _order_discrepancy(DiscrepancyKind.ORDER_FILLS_AHEAD, order, actual)
        return None

    async def _orders_open_only_at_broker(
        self, orders: list[BrokerOrderState]
    ) -> list[Discrepancy]:
        ids = {o.client_order_id: _uuid(o.client_order_id) for o in orders}
        rows = await self.pool.fetch(
            "SELECT id, symbol, portfolio_id, status FROM orders WHERE id = ANY($1::uuid[])",
            [i for i in ids.values() if i is not None],
        )
        ours = {row["id"]: row for row in rows}
        found = []
        for order in orders:
            row = ours.get(ids[order.client_order_id])
            found.append(
                Discrepancy(
                    kind=DiscrepancyKind.ORDER_OPEN_ONLY_AT_BROKER,
                    symbol=None if row is None else row["symbol"],
                    order_id=None if row is None else row["id"],
                    portfolio_id=None if row is None else row["portfolio_id"],
                    expected={"status": "absent" if row is None else row["status"]},
                    actual={
                        "status": order.status.value,
                        "filled_quantity": plain(order.filled_quantity),
                        "client_order_id": order.client_order_id,
                        "broker_order_id": order.broker_order_id,
                    },
                    note="not placed by this system" if row is None else None,
                )
            )
        return found

    @activity.defn(name="finish_reconciliation")
    async def finish_reconciliation(self, input: FinishReconciliationInput) -> ReconciliationReport:
        """Write the discrepancies and the outcome in one transaction.

        Idempotent: only a report still `running` is written (under its row lock); a second
        run finds it finished and returns it unchanged.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.fetchval(
                "SELECT status FROM reconciliation_reports WHERE id = $1 FOR UPDATE",
                input.report_id,
            )
            if status == ReportStatus.RUNNING.value:
                await conn.executemany(
                    """
                    INSERT INTO reconciliation_discrepancies (report_id, portfolio_id, kind,
                        symbol, order_id, expected, actual, repaired, note)
                    VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7::text::jsonb, $8, $9)
                    """,
                    [
                        (
                            input.report_id,
                            d.portfolio_id,
                            d.kind.value,
                            d.symbol,
                            d.order_id,
                            json.dumps(d.expected),
                            json.dumps(d.actual),
                            d.repaired,
                            d.note,
                        )
                        for d in input.discrepancies
                    ],
                )
                await conn.execute(
                    """
                    UPDATE reconciliation_reports
                    SET status = $2, summary = $3::text::jsonb, finished_at = $4
                    WHERE id = $1
                    """,
                    input.report_id,
                    input.status.value,
                    json.dumps(_summary(input)),
                    self.clock(),
                )
        return await _load_report(self.pool, input.report_id)

    # -- the kill switch ---------------------------------------------------------------------

    @activity.defn(name="record_trading_state")
    async def record_trading_state(self, input: RecordTradingStateInput) -> TradingStateChange:
        """Set the portfolio's trading state; when HALTED, list the orders open at that
        moment, in the same transaction.

        The portfolio row lock is the one risk takes to accept an order: every order is
        either in the list or is refused by risk as halted. Idempotent: setting a state
        twice leaves it as it is (the second run reports it as the previous state too) and
        lists the orders still open, which is what needs canceling.
        """
        try:
            async with UnitOfWork(self.pool) as uow:
                portfolio = await uow.portfolios.get(
                    input.portfolio_id, for_update=True, symbols=[], reservations_for=[]
                )
                previous = portfolio.trading_state
                portfolio.set_trading_state(input.state)
                await uow.portfolios.save(portfolio, symbols=[])
                open_orders: list[UUID] = []
                if input.state is TradingState.HALTED:
                    open_orders = [
                        row["id"]
                        for row in await uow.conn.fetch(
                            "SELECT id FROM orders WHERE portfolio_id = $1 "
                            "AND status = ANY($2::text[]) ORDER BY created_at, id",
                            input.portfolio_id,
                            list(OPEN_STATUSES),
                        )
                    ]
                await uow.commit()
        except NotFoundError as err:
            raise ApplicationError(str(err), type="NotFound", non_retryable=True) from err
        activity.logger.info(
            "portfolio %s: %s -> %s (%s); %d open orders to cancel",
            input.portfolio_id,
            previous.value,
            input.state.value,
            input.reason,
            len(open_orders),
        )
        return TradingStateChange(
            input.portfolio_id, previous, input.state, input.reason, open_orders
        )

    def all(self) -> list[Callable[..., object]]:
        return [
            self.market_day,
            self.take_snapshots,
            self.begin_reconciliation,
            self.compare_with_broker,
            self.finish_reconciliation,
            self.record_trading_state,
        ]


def _order_discrepancy(
    kind: DiscrepancyKind, order: OrderSnapshot, actual: dict[str, str]
) -> Discrepancy:
    return Discrepancy(
        kind=kind,
        symbol=order.symbol,
        order_id=order.order_id,
        portfolio_id=order.portfolio_id,
        expected={"status": order.status.value, "filled_quantity": plain(order.filled_quantity)},
        actual=actual,
    )


def _uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


def _summary(input: FinishReconciliationInput) -> dict[str, Any]:
    by_kind: dict[str, int] = defaultdict(int)
    for d in input.discrepancies:
        by_kind[d.kind.value] += 1
    summary: dict[str, Any] = {
        "discrepancies": len(input.discrepancies),
        "repaired": sum(d.repaired for d in input.discrepancies),
        "flagged": sum(not d.repaired for d in input.discrepancies),
        "by_kind": dict(by_kind),
    }
    if input.error:
        summary["error"] = input.error
    return summary


# -- store reads (API, operator commands, tests) ---------------------------------------------


def _snapshot_from_row(row: asyncpg.Record) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        portfolio_id=row["portfolio_id"],
        taken_at=row["taken_at"],
        kind=SnapshotKind(row["kind"]),
        cash=row["cash"],
        positions_value=row["positions_value"],
        equity=row["equity"],
        realized_pnl=row["realized_pnl"],
        unrealized_pnl=row["unrealized_pnl"],
        return_pct=row["return_pct"],
        drawdown=row["drawdown"],
    )


async def list_snapshots(
    pool: asyncpg.Pool,
    portfolio_id: UUID,
    since: datetime | None = None,
    until: datetime | None = None,
    kind: SnapshotKind | None = None,
    limit: int = 100,
) -> list[PortfolioSnapshot]:
    """The newest `limit` (1..1000) snapshots of a portfolio taken in [since, until],
    oldest first (the order a chart draws them in)."""
    rows = await pool.fetch(
        """
        SELECT * FROM (
            SELECT * FROM portfolio_snapshots
            WHERE portfolio_id = $1
              AND ($2::timestamptz IS NULL OR taken_at >= $2)
              AND ($3::timestamptz IS NULL OR taken_at <= $3)
              AND ($4::text IS NULL OR kind = $4)
            ORDER BY taken_at DESC, kind
            LIMIT $5
        ) newest ORDER BY taken_at, kind
        """,
        portfolio_id,
        since,
        until,
        None if kind is None else SnapshotKind(kind).value,
        max(1, min(limit, 1000)),
    )
    return [_snapshot_from_row(row) for row in rows]


async def _load_report(pool: asyncpg.Pool, report_id: UUID) -> ReconciliationReport:
    row = await pool.fetchrow("SELECT * FROM reconciliation_reports WHERE id = $1", report_id)
    if row is None:
        raise NotFoundError(f"reconciliation report {report_id} not found")
    return (await _reports_with_discrepancies(pool, [row]))[0]


async def _reports_with_discrepancies(
    pool: asyncpg.Pool, rows: list[asyncpg.Record]
) -> list[ReconciliationReport]:
    found = await pool.fetch(
        """
        SELECT report_id, kind, symbol, order_id, portfolio_id, expected::text AS expected,
               actual::text AS actual, repaired, note
        FROM reconciliation_discrepancies WHERE report_id = ANY($1::uuid[]) ORDER BY id
        """,
        [row["id"] for row in rows],
    )
    by_report: dict[UUID, list[Discrepancy]] = defaultdict(list)
    for d in found:
        by_report[d["report_id"]].append(
            Discrepancy(
                kind=DiscrepancyKind(d["kind"]),
                symbol=d["symbol"],
                order_id=d["order_id"],
                portfolio_id=d["portfolio_id"],
                expected=json.loads(d["expected"] or "{}"),
                actual=json.loads(d["actual"] or "{}"),
                repaired=d["repaired"],
                note=d["note"],
            )
        )
    return [
        ReconciliationReport(
            report_id=row["id"],
            run_at=row["run_at"],
            status=ReportStatus(row["status"]),
            broker=row["broker"],
            discrepancies=by_report[row["id"]],
            finished_at=row["finished_at"],
        )
        for row in rows
    ]


async def list_reconciliation_reports(
    pool: asyncpg.Pool, limit: int = 10
) -> list[ReconciliationReport]:
    """The newest `limit` reconciliation reports with their discrepancies, newest first."""
    rows = await pool.fetch(
        "SELECT * FROM reconciliation_reports ORDER BY run_at DESC LIMIT $1",
        max(1, min(limit, 1000)),
    )
    return await _reports_with_discrepancies(pool, list(rows))


@dataclass(frozen=True)
class StuckOrder:
    """An order waiting on the broker for longer than it should."""

    order_id: UUID
    portfolio_id: UUID
    symbol: str
    status: OrderStatus
    order_type: str
    time_in_force: str
    updated_at: datetime
    age: timedelta

    @property
    def workflow_id(self) -> str:
        return workflow_id_for(self.order_id)


async def find_stuck_orders(
    pool: asyncpg.Pool,
    older_than: timedelta,
    now: datetime | None = None,
    limit: int = 100,
) -> list[StuckOrder]:
    """Orders at the broker (submitted, partially filled, pending cancel) whose row has not
    changed for `older_than`, the longest-waiting first."""
    now = now or datetime.now(UTC)
    rows = await pool.fetch(
        """
        SELECT id, portfolio_id, symbol, status, order_type, time_in_force, updated_at
        FROM orders
        WHERE status = ANY($1::text[]) AND updated_at < $2
        ORDER BY updated_at, id
        LIMIT $3
        """,
        [s.value for s in AT_BROKER],
        now - older_than,
        max(1, min(limit, 1000)),
    )
    return [
        StuckOrder(
            order_id=row["id"],
            portfolio_id=row["portfolio_id"],
            symbol=row["symbol"],
            status=OrderStatus(row["status"]),
            order_type=row["order_type"],
            time_in_force=row["time_in_force"],
            updated_at=row["updated_at"],
            age=now - row["updated_at"],
        )
        for row in rows
    ]


async def portfolio_ids(pool: asyncpg.Pool) -> list[UUID]:
    return [row["id"] for row in await pool.fetch("SELECT id FROM portfolios ORDER BY created_at")]


# -- client calls (API, operator commands) ---------------------------------------------------


async def set_trading_state(
    client: Client,
    pool: asyncpg.Pool,
    portfolio_id: UUID,
    state: TradingState,
    reason: str,
    *,
    task_queue: str = TASK_QUEUE,
) -> TradingStateChange:
    """Move a portfolio to ACTIVE, REDUCING or HALTED; answers once the state is stored.
    HALTED goes on to cancel the orders listed in the answer, durably, in the portfolio's
    TradingStateWorkflow. Raises NotFoundError for an unknown portfolio."""
    if await pool.fetchval("SELECT 1 FROM portfolios WHERE id = $1", portfolio_id) is None:
        raise NotFoundError(f"portfolio {portfolio_id} not found")
    start = WithStartWorkflowOperation(
        TradingStateWorkflow.run,
        TradingStateWorkflowInput(portfolio_id),
        id=trading_state_workflow_id(portfolio_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    change: TradingStateChange = await client.execute_update_with_start_workflow(
        "set_state",
        TradingStateRequest(TradingState(state), reason),
        start_workflow_operation=start,
        result_type=TradingStateChange,
    )
    return change


async def reconcile_order(client: Client, order_id: UUID) -> None:
    """Make one order's workflow re-read its broker status now. Raises RPCError (NOT_FOUND)
    when the workflow has closed: a finished order has nothing left to read."""
    await client.get_workflow_handle(workflow_id_for(order_id)).signal("reconcile")
