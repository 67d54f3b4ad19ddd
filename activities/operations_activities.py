"""Operations activities: reconciliation, portfolio snapshots and the kill switch's store step.

Each activity may run more than once (a retry, a worker crash after the work but before
the completion was recorded); each docstring says why running it twice is harmless.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.calendar.sessions import NEW_YORK, MarketSessions
from activities.store import ledger
from activities.store.queries import AT_BROKER, load_report, portfolio_snapshot_from_row
from activities.store.repositories import (
    OPEN_STATUSES,
    NotFoundError,
    UnitOfWork,
    order_snapshot_from_row,
)
from contracts.names import ActivityName, ErrorType
from contracts.payloads import (
    BrokerOrderState,
    Discrepancy,
    DiscrepancyKind,
    FinishReconciliationInput,
    MarketDay,
    OrderSnapshot,
    PortfolioSnapshot,
    ReconciliationReport,
    RecordTradingStateInput,
    ReportStatus,
    SnapshotInput,
    SnapshotKind,
    SnapshotResult,
    TradingStateChange,
)
from contracts.ports import Broker, BrokerOrderNotFoundError, MarketData
from domain.market import SymbolNotFoundError, Timeframe
from domain.portfolio import Portfolio, TradingState
from domain.values import decimal_text

log = logging.getLogger(__name__)

PERCENT = Decimal("0.00000001")  # the scale of return_pct and drawdown
# Reconciliation asks the broker about orders closed in the books this long before its run:
# a fill the broker reports for one of them was never applied by its (ended) workflow.
CLOSED_ORDER_LOOKBACK = timedelta(days=3)
# Closed in the books without being filled: the only closed orders that can lack a fill.
CLOSED_SHORT = ("canceled", "expired", "rejected")
ZERO = Decimal(0)


def broker_name_of(broker: object) -> str:
    """`PaperVenue` -> `paper_venue`, `AlpacaBroker` -> `alpaca_broker`: the report's broker."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(broker).__name__).lower()


# -- activities ----------------------------------------------------------------------------


class OperationsActivities:
    """The activities of the operations workflows, bound to the resources they use."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        broker: Broker,
        market_data: MarketData,
        sessions: MarketSessions,
        broker_name: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.pool = pool
        self.broker = broker
        self.market_data = market_data
        self.sessions = sessions
        self.broker_name = broker_name or broker_name_of(broker)
        self.clock = clock

    @activity.defn(name=ActivityName.MARKET_DAY)
    async def market_day(self, at: datetime) -> MarketDay:
        """Read-only: what the exchange calendar says about `at` (its New York date)."""
        day = at.astimezone(NEW_YORK).date()
        return MarketDay(
            trading_day=self.sessions.is_trading_day(day), open=self.sessions.is_open(at)
        )

    # -- snapshots ---------------------------------------------------------------------------

    @activity.defn(name=ActivityName.TAKE_SNAPSHOTS)
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
        return portfolio_snapshot_from_row(row), created

    # -- reconciliation ----------------------------------------------------------------------

    @activity.defn(name=ActivityName.BEGIN_RECONCILIATION)
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
        return await load_report(self.pool, report.report_id)

    @activity.defn(name=ActivityName.COMPARE_WITH_BROKER)
    async def compare_with_broker(self, report: ReconciliationReport) -> ReconciliationReport:
        """Every difference between the store and the broker: positions summed per symbol
        over the portfolios, and open orders both ways. Read-only.

        The store is read first: a fill landing meanwhile makes the broker look ahead, which
        is the repairable direction (and the check after the repair sees it settled).
        """
        async with self.pool.acquire() as conn:
            # A parent order (TWAP, VWAP) never goes to the broker: its children do.
            order_rows = await conn.fetch(
                "SELECT * FROM orders WHERE status = ANY($1::text[]) AND order_class = 'simple' "
                "ORDER BY created_at, id",
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
        for order in map(order_snapshot_from_row, order_rows):
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
                    expected={"quantity": decimal_text(ours), "portfolios": str(len(only))},
                    actual={"quantity": decimal_text(theirs)},
                    note=note,
                )
            )
        return ReconciliationReport(
            report.report_id, report.run_at, report.status, self.broker_name, found
        )

    @activity.defn(name=ActivityName.BOOK_CLOSED_ORDER_FILLS)
    async def book_closed_order_fills(self, report: ReconciliationReport) -> ReconciliationReport:
        """Executions the broker reports for orders that are closed in the books, which the
        books lack: applied to the ledger and flagged for operators, one discrepancy each.

        An order closed in the books (canceled, expired, rejected) has no workflow left to
        apply a fill the broker reports later, or one whose event was lost. Each execution
        goes through `ledger.book_late_event`, the path of a late event: applied once by
        execution id and kept, flagged, in `late_broker_events`. Looked at: orders sent to
        the broker, short of their quantity, closed within CLOSED_ORDER_LOOKBACK before the
        run (the store's order of a day with no reconciliation is looked at the next day).

        Idempotent: an execution is applied once (the executions table is keyed on its id,
        the audit row too); a re-run of the same report finds the audit rows it wrote
        (their note names the report) and reports the same discrepancies, booking nothing.
        """
        found_by = f"reconciliation {report.report_id}"
        rows = await self.pool.fetch(
            """
            SELECT * FROM orders
            WHERE status = ANY($1::text[]) AND broker_order_id IS NOT NULL
              AND order_class = 'simple' AND updated_at >= $2
              AND (filled_quantity < quantity OR id IN (
                  SELECT order_id FROM late_broker_events WHERE note LIKE $3))
            ORDER BY created_at, id
            """,
            list(CLOSED_SHORT),
            report.run_at - CLOSED_ORDER_LOOKBACK,
            f"{found_by}: %",
        )
        found: list[Discrepancy] = []
        for order in map(order_snapshot_from_row, rows):
            try:
                state = await self.broker.get_order(str(order.order_id))
            except BrokerOrderNotFoundError:
                continue  # closed in the books because the broker never had it
            known = {
                row["execution_id"]: row["quantity"]
                for row in await self.pool.fetch(
                    "SELECT execution_id, quantity FROM executions WHERE order_id = $1",
                    order.order_id,
                )
            }
            booked_here = {
                row["dedupe_key"]
                for row in await self.pool.fetch(
                    "SELECT dedupe_key FROM late_broker_events WHERE order_id = $1 "
                    "AND note LIKE $2",
                    order.order_id,
                    f"{found_by}: %",
                )
            }
            missing = [e for e in state.executions if e.execution_id not in known]
            for execution in missing:
                await ledger.book_late_event(
                    self.pool, str(order.order_id), execution, found_by=found_by
                )
                booked_here.add(execution.execution_id or "")
            booked = [e for e in state.executions if e.execution_id in booked_here]
            if not booked:
                continue
            before = order.filled_quantity - sum(
                (known[e.execution_id] for e in booked if e.execution_id in known), ZERO
            )
            log.warning(
                "reconciliation: order %s is %s in the books, the broker reports %d "
                "execution(s) it lacked: applied and flagged",
                order.order_id,
                order.status.value,
                len(booked),
            )
            found.append(
                Discrepancy(
                    kind=DiscrepancyKind.ORDER_FILLS_BEHIND,
                    symbol=order.symbol,
                    order_id=order.order_id,
                    portfolio_id=order.portfolio_id,
                    expected={
                        "status": order.status.value,
                        "filled_quantity": decimal_text(before),
                    },
                    actual={
                        "status": state.status.value,
                        "filled_quantity": decimal_text(state.filled_quantity),
                    },
                    repaired=True,
                    note=(
                        "order closed in the books, its workflow ended: the broker's "
                        f"executions {', '.join(sorted(e.execution_id or '' for e in booked))} "
                        "applied to the ledger and flagged for operators (late_broker_events)"
                    ),
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
            "filled_quantity": decimal_text(at_broker.filled_quantity),
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
                        "filled_quantity": decimal_text(order.filled_quantity),
                        "client_order_id": order.client_order_id,
                        "broker_order_id": order.broker_order_id,
                    },
                    note="not placed by this system" if row is None else None,
                )
            )
        return found

    @activity.defn(name=ActivityName.FINISH_RECONCILIATION)
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
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                    """,
                    [
                        (
                            input.report_id,
                            d.portfolio_id,
                            d.kind.value,
                            d.symbol,
                            d.order_id,
                            d.expected,
                            d.actual,
                            d.repaired,
                            d.note,
                        )
                        for d in input.discrepancies
                    ],
                )
                await conn.execute(
                    """
                    UPDATE reconciliation_reports
                    SET status = $2, summary = $3, finished_at = $4
                    WHERE id = $1
                    """,
                    input.report_id,
                    input.status.value,
                    _summary(input),
                    self.clock(),
                )
        return await load_report(self.pool, input.report_id)

    # -- the kill switch ---------------------------------------------------------------------

    @activity.defn(name=ActivityName.RECORD_TRADING_STATE)
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
            raise ApplicationError(str(err), type=ErrorType.NOT_FOUND, non_retryable=True) from err
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
            self.book_closed_order_fills,
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
        expected={
            "status": order.status.value,
            "filled_quantity": decimal_text(order.filled_quantity),
        },
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
