"""Temporal activities of the strategy workflow: bars, the portfolio as a strategy sees it,
sizing an opening order at the current quote, the run report; and, in a backtest, the
replayed bars and the replay clock.

Each activity may run more than once; each docstring says why running it twice is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.backtest.replay import BarReplay
from activities.calendar.sessions import MarketSessions
from activities.store.repositories import UnitOfWork
from contracts.names import ErrorType
from contracts.ports import MarketData
from contracts.strategies import (
    BarsRequest,
    OpeningPlan,
    OpeningRequest,
    PortfolioView,
    ReplayBarsRequest,
    StrategyRef,
    StrategyRunReport,
)
from domain.commissions import CommissionModel
from domain.market import Bar, SymbolNotFoundError
from domain.orders import OrderSide
from domain.portfolio import Portfolio
from domain.strategies import Exposure, Target, opening_order
from domain.strategies.registry import build


class ActivityNames:
    MARKET_BARS = "strategy_market_bars"
    SESSION_OPEN = "strategy_session_open"
    PORTFOLIO = "strategy_portfolio"
    PLAN_OPENING = "strategy_plan_opening"
    RECORD_RUN = "strategy_record_run"
    REPLAY_BARS = "replay_bars"
    REPLAY_ADVANCE = "replay_advance"
    LOAD_STRATEGY = "strategy_load"


class StrategyActivities:
    """The activities of StrategyRunWorkflow, bound to the resources they use. `replay` is
    the backtest's venue (None in a live worker)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        market_data: MarketData,
        sessions: MarketSessions,
        commission_model: CommissionModel,
        replay: BarReplay | None = None,
        loader: Callable[[str, Mapping[str, str]], object] | None = None,
    ) -> None:
        self.pool = pool
        self.market_data = market_data
        self.sessions = sessions
        self.commission_model = commission_model
        self.replay = replay
        self.loader = loader

    @activity.defn(name=ActivityNames.LOAD_STRATEGY)
    async def load_strategy(self, ref: StrategyRef) -> None:
        """Check the strategy and its parameters in this worker and make a user strategy
        (an importable dotted path) known to the workflows of this process.

        Idempotent: importing and registering the same class again changes nothing."""
        try:
            if self.loader is not None:
                self.loader(ref.name, ref.params)
            else:
                build(ref.name, ref.params)
        except (ValueError, TypeError) as err:
            raise ApplicationError(
                str(err), type=ErrorType.VALIDATION_ERROR, non_retryable=True
            ) from err

    @activity.defn(name=ActivityNames.MARKET_BARS)
    async def market_bars(self, request: BarsRequest) -> list[Bar]:
        """Read-only: the latest bars of a symbol from the market data."""
        try:
            return await self.market_data.get_bars(request.symbol, request.timeframe, request.limit)
        except SymbolNotFoundError as err:
            raise ApplicationError(
                str(err), type=ErrorType.SYMBOL_NOT_FOUND, non_retryable=True
            ) from err

    @activity.defn(name=ActivityNames.SESSION_OPEN)
    async def session_open(self, at: datetime) -> bool:
        """Read-only: whether the market session is open at `at` (the exchange calendar)."""
        return self.sessions.is_open(at)

    async def _marked(self, portfolio: Portfolio) -> Portfolio:
        for position in portfolio.open_positions():
            quote = await self.market_data.get_quote(position.symbol)
            position.mark(quote.mid)
        return portfolio

    @activity.defn(name=ActivityNames.PORTFOLIO)
    async def portfolio(self, portfolio_id: UUID) -> PortfolioView:
        """Read-only: cash, equity and buying power at the current quotes, the trading state
        (the kill switch) and the signed position of every symbol held."""
        async with UnitOfWork(self.pool) as uow:
            portfolio = await uow.portfolios.get(portfolio_id)
        portfolio = await self._marked(portfolio)
        return PortfolioView(
            cash=portfolio.cash,
            equity=portfolio.get_total_value(),
            buying_power=portfolio.buying_power(),
            trading_state=portfolio.trading_state.value,
            positions={p.symbol: p.quantity for p in portfolio.open_positions()},
        )

    @activity.defn(name=ActivityNames.PLAN_OPENING)
    async def plan_opening(self, request: OpeningRequest) -> OpeningPlan:
        """Read-only: the opening order of a target, sized with the domain's sizing at the
        current quote, within the buying power and the portfolio's risk limits (the
        market-order buffer, the largest order and position, the concentration)."""
        async with UnitOfWork(self.pool) as uow:
            portfolio = await uow.portfolios.get(request.portfolio_id)
        portfolio = await self._marked(portfolio)
        quote = await self.market_data.get_quote(request.symbol)
        exposure = Exposure(request.exposure)
        price = quote.ask if exposure is Exposure.LONG else quote.bid
        limits = portfolio.limits
        held = portfolio.positions.get(request.symbol)
        position = Decimal(0) if held is None or held.is_closed() else held.quantity
        # "All available equity": the buying power, without leverage beyond 1x.
        unlevered = portfolio.get_total_value() - portfolio.gross_exposure() - portfolio.reserved()
        available = min(
            min(portfolio.buying_power(), unlevered) / (1 + limits.market_order_buffer),
            limits.max_order_notional,
            limits.max_position_size,
            limits.max_concentration * portfolio.get_total_value(),
        )

        def commission(side: OrderSide, quantity: Decimal, at: Decimal) -> Decimal:
            return self.commission_model.commission(side.value, quantity, at).amount

        planned = opening_order(
            Target(exposure, request.reason, request.fraction),
            position,
            available,
            price,
            commission,
        )
        if planned is None:
            return OpeningPlan(price=price)
        return OpeningPlan(side=planned.side, quantity=planned.quantity, price=price)

    @activity.defn(name=ActivityNames.RECORD_RUN)
    async def record_run(self, report: StrategyRunReport) -> None:
        """Store the run report and the strategy and reason of each order it placed.

        Idempotent: the run id and the order ids are primary keys (ON CONFLICT DO NOTHING),
        so a second run of this activity writes nothing new."""
        body = {
            "bars": report.bars,
            "orders": [
                {
                    "order_id": str(o.order_id),
                    "client_order_id": o.client_order_id,
                    "symbol": o.symbol,
                    "side": o.side.value,
                    "quantity": str(o.quantity),
                    "status": o.status.value,
                    "filled_quantity": str(o.filled_quantity),
                    "average_fill_price": None
                    if o.average_fill_price is None
                    else str(o.average_fill_price),
                    "reason": o.reason,
                    "reject_code": o.reject_code,
                }
                for o in report.orders
            ],
        }
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO strategy_runs (run_id, strategy, params, symbols, portfolio_id,
                    status, note, started_at, finished_at, report)
                VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10::jsonb)
                ON CONFLICT (run_id) DO NOTHING
                """,
                report.run_id,
                report.strategy,
                dict(sorted(report.params.items())),
                report.symbols,
                report.portfolio_id,
                report.status.value,
                report.note,
                report.started_at,
                report.finished_at,
                body,
            )
            await conn.executemany(
                """
                INSERT INTO strategy_orders (order_id, run_id, strategy, reason)
                SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM orders WHERE id = $1)
                ON CONFLICT (order_id) DO NOTHING
                """,
                [(o.order_id, report.run_id, report.strategy, o.reason) for o in report.orders],
            )

    # -- backtests ------------------------------------------------------------------------

    def _replay(self) -> BarReplay:
        if self.replay is None:
            raise ApplicationError(
                "this worker runs no backtest", type=ErrorType.VALIDATION_ERROR, non_retryable=True
            )
        return self.replay

    @activity.defn(name=ActivityNames.REPLAY_BARS)
    async def replay_bars(self, request: ReplayBarsRequest) -> list[Bar]:
        """Read-only: a slice of the bars the backtest replays."""
        bars = self._replay().bars(request.symbol)
        return bars[request.offset : request.offset + request.limit]

    @activity.defn(name=ActivityNames.REPLAY_ADVANCE)
    async def replay_advance(self, index: int) -> None:
        """Move the replay clock to the open of bar `index`.

        Idempotent: the clock only moves forward; an index it has reached changes nothing."""
        await self._replay().advance(index)

    def all(self) -> list[Callable[..., object]]:
        return [
            self.load_strategy,
            self.market_bars,
            self.session_open,
            self.portfolio,
            self.plan_opening,
            self.record_run,
            self.replay_bars,
            self.replay_advance,
        ]
