"""Protected positions: the levels on a position's row, and the activities of its guard
(workflows/protection.py). Each docstring says why running it twice is harmless."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from uuid import UUID

import asyncpg
from temporalio import activity

from activities.store.repositories import PortfolioRepository
from contracts.names import ActivityName
from contracts.payloads import ProtectionCheck, ProtectionInput
from contracts.ports import MarketData
from domain.orders import OrderSide
from domain.portfolio import TradingState
from domain.positions import Position


async def set_levels(
    pool: asyncpg.Pool,
    portfolio_id: UUID,
    symbol: str,
    stop_loss: Decimal | None,
    take_profit: Decimal | None,
) -> Position | None:
    """Write the position's stop-loss and take-profit levels under the portfolio's lock
    (every writer of positions holds it, so no fill overwrites them with older values);
    None when the portfolio holds no open position in `symbol`. Idempotent."""
    async with pool.acquire() as conn, conn.transaction():
        portfolio = await PortfolioRepository(conn).get(
            portfolio_id, for_update=True, symbols=[symbol], reservations_for=[]
        )
        position = portfolio.positions.get(symbol)
        if position is None or position.is_closed():
            return None
        await conn.execute(
            "UPDATE positions SET stop_loss_price = $3, take_profit_price = $4, "
            "updated_at = now() WHERE portfolio_id = $1 AND symbol = $2",
            portfolio_id,
            symbol,
            stop_loss,
            take_profit,
        )
        position.stop_loss_price, position.take_profit_price = stop_loss, take_profit
        return position


class ProtectionActivities:
    def __init__(self, pool: asyncpg.Pool, market_data: MarketData) -> None:
        self.pool = pool
        self.market_data = market_data

    @activity.defn(name=ActivityName.CHECK_PROTECTION)
    async def check_protection(self, input: ProtectionInput) -> ProtectionCheck:
        """The position, its levels and the portfolio's state from one snapshot, marked at
        the quote's last trade: whether a level is hit and how much can be closed (what
        open orders on the closing side do not already claim). Read-only."""
        async with self.pool.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                portfolio = await PortfolioRepository(conn).get(
                    input.portfolio_id, symbols=[input.symbol]
                )
        if portfolio.trading_state is TradingState.HALTED:
            return ProtectionCheck("halted")
        position = portfolio.positions.get(input.symbol)
        if position is None or position.is_closed():
            return ProtectionCheck("flat")
        if position.stop_loss_price is None and position.take_profit_price is None:
            return ProtectionCheck("unprotected")
        quote = await self.market_data.get_quote(input.symbol)
        position.current_market_price = quote.last
        side = OrderSide.SELL if position.is_long else OrderSide.BUY
        closable = portfolio.closable_quantity(input.symbol, side)
        if position.should_stop_loss():
            return ProtectionCheck("stop_loss", side, closable, quote.last)
        if position.should_take_profit():
            return ProtectionCheck("take_profit", side, closable, quote.last)
        return ProtectionCheck("hold", side, closable, quote.last)

    @activity.defn(name=ActivityName.CLEAR_PROTECTION)
    async def clear_protection(self, input: ProtectionInput) -> None:
        """Remove the levels of a guard that ended (flat, halted). Idempotent."""
        await set_levels(self.pool, input.portfolio_id, input.symbol, None, None)

    def all(self) -> list[Callable[..., object]]:
        return [self.check_protection, self.clear_protection]
