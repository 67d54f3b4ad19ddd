"""/api/v1/portfolio and /api/v1/positions: the key's portfolio marked at current quotes."""

from __future__ import annotations

import asyncio
import logging
from decimal import ROUND_HALF_EVEN, Decimal
from uuid import UUID, uuid5

from fastapi import APIRouter, Depends

from api import queries
from api.deps import CurrentKey, Deps, rate_limited
from api.routes import API_V1
from api.schemas import PortfolioPublic, PositionList, PositionPublic
from contracts.ports import MarketData
from domain.portfolio import Portfolio
from domain.positions import Position
from domain.values import round_cents

log = logging.getLogger("trading.api.portfolio")

router = APIRouter(
    prefix=API_V1, tags=["portfolio"], dependencies=[Depends(rate_limited("get_positions"))]
)

PERCENT = Decimal("0.01")


async def load_marked(deps: Deps, portfolio_id: UUID) -> Portfolio:
    """The portfolio from one consistent snapshot (cash, positions and reservations read by
    one statement, one round trip), its open positions marked at the quote's mid."""
    portfolio = await queries.load_portfolio(deps.pool, portfolio_id)
    symbols = [position.symbol for position in portfolio.open_positions()]
    portfolio.mark(await marks(deps.market_data, symbols))
    return portfolio


async def marks(market_data: MarketData, symbols: list[str]) -> dict[str, Decimal]:
    """Mid prices of `symbols`; a symbol without a quote stays unmarked (valued at cost)
    rather than failing the whole answer."""
    quotes = await asyncio.gather(
        *(market_data.get_quote(symbol) for symbol in symbols), return_exceptions=True
    )
    found: dict[str, Decimal] = {}
    for symbol, quote in zip(symbols, quotes, strict=True):
        if isinstance(quote, BaseException):
            log.info("no mark for %s: %s", symbol, type(quote).__name__)
        else:
            found[symbol] = quote.mid
    return found


@router.get("/portfolio", response_model=PortfolioPublic, summary="The portfolio, marked")
async def get_portfolio(deps: Deps, key: CurrentKey) -> PortfolioPublic:
    portfolio = await load_marked(deps, key.portfolio_id)
    stats = portfolio.trade_statistics()
    unrealized = round_cents(portfolio.unrealized_pnl())
    realized = round_cents(portfolio.realized_pnl)
    return PortfolioPublic(
        id=portfolio.id,
        name=portfolio.name,
        currency=portfolio.currency,
        trading_state=portfolio.trading_state,
        initial_capital=portfolio.initial_capital,
        cash_balance=round_cents(portfolio.cash),
        reserved=round_cents(portfolio.reserved()),
        buying_power=portfolio.buying_power(),
        positions_value=round_cents(portfolio.positions_value()),
        total_value=round_cents(portfolio.get_total_value()),
        unrealized_pnl=unrealized,
        realized_pnl=realized,
        total_pnl=unrealized + realized,
        return_percentage=_percent(portfolio.get_return_percentage()),
        day_pnl=round_cents(portfolio.daily_pnl()),
        commissions_paid=round_cents(portfolio.total_commissions),
        open_positions=len(portfolio.open_positions()),
        total_trades=stats.trades,
        win_rate=None if stats.win_rate is None else _percent(stats.win_rate * 100),
        as_of=deps.clock(),
    )


@router.get("/positions", response_model=PositionList, summary="Open positions, marked")
async def get_positions(deps: Deps, key: CurrentKey) -> PositionList:
    portfolio = await load_marked(deps, key.portfolio_id)
    positions = sorted(portfolio.open_positions(), key=lambda position: position.symbol)
    return PositionList(positions=[position_public(portfolio.id, p) for p in positions])


def position_public(portfolio_id: UUID, position: Position) -> PositionPublic:
    value = position.get_position_value()
    unrealized = position.get_unrealized_pnl()
    return PositionPublic(
        id=uuid5(portfolio_id, position.symbol),  # stable: one position per symbol
        symbol=position.symbol,
        side="long" if position.is_long else "short",
        quantity=position.quantity,
        average_entry_price=position.average_entry_price,
        cost_basis=position.basis,
        current_market_price=position.current_market_price,
        position_value=None if value is None else round_cents(value),
        unrealized_pnl=None if unrealized is None else round_cents(unrealized),
        realized_pnl=round_cents(position.realized_pnl),
        commission_paid=round_cents(position.commission_paid),
        opened_at=position.opened_at,
        updated_at=position.updated_at,
        stop_loss_price=position.stop_loss_price,
        take_profit_price=position.take_profit_price,
    )


def _percent(value: Decimal) -> Decimal:
    return value.quantize(PERCENT, rounding=ROUND_HALF_EVEN)
