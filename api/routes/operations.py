"""/api/v1/portfolio/snapshots and /api/v1/portfolio/trading-state: the key's portfolio's
history of valuations and its kill switch (the same as `trading halt|reduce|resume`)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from temporalio.client import WorkflowUpdateFailedError

from activities.store.queries import list_snapshots
from api.deps import CurrentKey, Deps, rate_limited
from api.errors import ApiError
from api.routes import API_V1
from api.schemas import DecimalStr
from bootstrap.control import set_trading_state
from contracts.payloads import SnapshotKind
from domain.errors import ErrorCode
from domain.portfolio import TradingState

snapshots = APIRouter(
    prefix=API_V1, tags=["portfolio"], dependencies=[Depends(rate_limited("get_positions"))]
)
# Changing the trading state is rare and consequential: it shares the cancel budget.
trading_state = APIRouter(
    prefix=API_V1, tags=["portfolio"], dependencies=[Depends(rate_limited("cancel_order"))]
)


class SnapshotPublic(BaseModel):
    taken_at: datetime
    kind: SnapshotKind
    cash: DecimalStr
    positions_value: DecimalStr
    equity: DecimalStr
    realized_pnl: DecimalStr
    unrealized_pnl: DecimalStr
    return_pct: DecimalStr
    drawdown: DecimalStr


class SnapshotList(BaseModel):
    portfolio_id: UUID
    snapshots: list[SnapshotPublic]


class TradingStateUpdate(BaseModel):
    state: TradingState = Field(examples=["halted"])
    # Printable text only: the reason is shown to operators and kept in workflow history.
    reason: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$",
        examples=["risk desk: news pending"],
    )


class TradingStatePublic(BaseModel):
    portfolio_id: UUID
    previous: TradingState
    state: TradingState
    reason: str
    orders_to_cancel: list[UUID]


@snapshots.get("/portfolio/snapshots", response_model=SnapshotList, summary="Portfolio snapshots")
async def get_snapshots(
    deps: Deps,
    key: CurrentKey,
    since: datetime | None = None,
    until: datetime | None = None,
    kind: SnapshotKind | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> SnapshotList:
    """Valuations taken by the snapshot schedules (intraday and at the close), oldest
    first: cash, positions value, equity, realized and unrealized P&L, return, drawdown."""
    rows = await list_snapshots(deps.pool, key.portfolio_id, since, until, kind, limit)
    return SnapshotList(
        portfolio_id=key.portfolio_id,
        snapshots=[
            SnapshotPublic(
                taken_at=row.taken_at,
                kind=row.kind,
                cash=row.cash,
                positions_value=row.positions_value,
                equity=row.equity,
                realized_pnl=row.realized_pnl,
                unrealized_pnl=row.unrealized_pnl,
                return_pct=row.return_pct,
                drawdown=row.drawdown,
            )
            for row in rows
        ],
    )


@trading_state.put(
    "/portfolio/trading-state",
    response_model=TradingStatePublic,
    summary="Kill switch: halt, reduce or resume trading",
)
async def put_trading_state(
    deps: Deps, key: CurrentKey, body: TradingStateUpdate
) -> TradingStatePublic:
    """`halted` refuses new orders and cancels every open one (durably, in the portfolio's
    TradingStateWorkflow); `reducing` admits only orders that shrink a position; `active`
    trades normally. Answers once the state is stored."""
    try:
        change = await set_trading_state(
            deps.temporal,
            deps.pool,
            key.portfolio_id,
            body.state,
            body.reason,
            task_queue=deps.settings.task_queue,
        )
    except WorkflowUpdateFailedError as err:
        # The workflow's validator refused the change: the request, not the server, is wrong.
        raise ApiError(409, ErrorCode.CONFLICT, f"trading state not changed: {err.cause}") from err
    return TradingStatePublic(
        portfolio_id=change.portfolio_id,
        previous=change.previous,
        state=change.state,
        reason=change.reason,
        orders_to_cancel=change.orders_to_cancel,
    )
