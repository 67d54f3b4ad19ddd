"""Read queries of operations data: portfolio snapshots, reconciliation reports and stuck
orders. The API, the operator commands and the operations activities read through these."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from activities.store.repositories import NotFoundError
from contracts.payloads import (
    Discrepancy,
    DiscrepancyKind,
    PortfolioSnapshot,
    ReconciliationReport,
    ReportStatus,
    SnapshotKind,
    workflow_id_for,
)
from domain.orders import OrderStatus

# Orders the broker has been told about; pending and accepted ones may not have reached it.
AT_BROKER = (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING_CANCEL)


def portfolio_snapshot_from_row(row: asyncpg.Record) -> PortfolioSnapshot:
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
    return [portfolio_snapshot_from_row(row) for row in rows]


async def load_report(pool: asyncpg.Pool, report_id: UUID) -> ReconciliationReport:
    row = await pool.fetchrow("SELECT * FROM reconciliation_reports WHERE id = $1", report_id)
    if row is None:
        raise NotFoundError(f"reconciliation report {report_id} not found")
    return (await _reports_with_discrepancies(pool, [row]))[0]


async def _reports_with_discrepancies(
    pool: asyncpg.Pool, rows: list[asyncpg.Record]
) -> list[ReconciliationReport]:
    found = await pool.fetch(
        """
        SELECT report_id, kind, symbol, order_id, portfolio_id, expected, actual, repaired, note
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
                expected=d["expected"] or {},
                actual=d["actual"] or {},
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
    broker_unreachable_since: datetime | None = None  # waiting out a broker outage

    @property
    def workflow_id(self) -> str:
        return workflow_id_for(self.order_id)


async def find_stuck_orders(
    pool: asyncpg.Pool,
    older_than: timedelta,
    now: datetime | None = None,
    limit: int = 100,
) -> list[StuckOrder]:
    """Orders waiting on the broker for longer than `older_than`, the longest-waiting
    first: at the broker (submitted, partially filled, pending cancel) with a row unchanged
    for that long, or open and unable to reach the broker for that long (any status).
    Parents (TWAP/VWAP, bracket, OCO, OTO) never reach the broker and are left out; their
    children and legs are ordinary orders and are listed like any other."""
    now = now or datetime.now(UTC)
    rows = await pool.fetch(
        """
        SELECT id, portfolio_id, symbol, status, order_type, time_in_force, updated_at,
               broker_unreachable_since
        FROM orders
        WHERE order_class = 'simple'
          AND ((status = ANY($1::text[]) AND updated_at < $2)
               OR (broker_unreachable_since < $2 AND status = ANY($4::text[])))
        ORDER BY least(updated_at, broker_unreachable_since), id
        LIMIT $3
        """,
        [s.value for s in AT_BROKER],
        now - older_than,
        max(1, min(limit, 1000)),
        [s.value for s in OrderStatus if s.is_open],
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
            age=now - min(row["updated_at"], row["broker_unreachable_since"] or now),
            broker_unreachable_since=row["broker_unreachable_since"],
        )
        for row in rows
    ]


async def portfolio_ids(pool: asyncpg.Pool) -> list[UUID]:
    return [row["id"] for row in await pool.fetch("SELECT id FROM portfolios ORDER BY created_at")]


async def open_order_ids(pool: asyncpg.Pool) -> list[UUID]:
    """Every open order's id, oldest first, however many there are (ids only: cheap). After
    a broker stream reconnects, each of them must re-read the broker, not only the newest
    page of them."""
    rows = await pool.fetch(
        "SELECT id FROM orders WHERE status = ANY($1::text[]) ORDER BY created_at, id",
        [s.value for s in OrderStatus if s.is_open],
    )
    return [row["id"] for row in rows]
