"""Pre-trade risk: checks that approve or deny an order with a reason code, and the
buying power an accepted order must reserve."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from domain.errors import ErrorCode
from domain.orders import Order, OrderSide
from domain.portfolio import Portfolio, TradingState
from domain.values import round_cents_up

ZERO = Decimal(0)


@dataclass(frozen=True)
class RiskDecision:
    """The outcome of the pre-trade checks. A denial carries a code and a reason; it is a
    value, not an exception, so callers can persist it as the order's rejection."""

    approved: bool
    code: ErrorCode | None = None
    reason: str | None = None
    reservation: Decimal = ZERO
    details: dict[str, str] = field(default_factory=dict)

    @classmethod
    def approve(cls, reservation: Decimal) -> RiskDecision:
        return cls(True, reservation=reservation)

    @classmethod
    def deny(cls, code: ErrorCode, reason: str, **details: object) -> RiskDecision:
        return cls(False, code, reason, details={k: str(v) for k, v in details.items()})


def opening_quantity(portfolio: Portfolio, order: Order) -> Decimal:
    """The part of `order` that opens or increases exposure (the rest reduces a position)."""
    return order.quantity - min(
        order.quantity, portfolio.closable_quantity(order.symbol, order.side)
    )


def required_reservation(
    portfolio: Portfolio, order: Order, market_price: Decimal, commission: Decimal = ZERO
) -> Decimal:
    """Buying power to hold for `order`: the opening part at its worst expected price (with
    the market-order buffer where the price is not bounded), plus the commission estimate."""
    opening = opening_quantity(portfolio, order)
    if opening == 0:
        return round_cents_up(commission)
    price = order.reference_price(market_price)
    if order.limit_price is None:
        price *= 1 + portfolio.limits.market_order_buffer
    return round_cents_up(opening * price + commission)


def check_order(
    portfolio: Portfolio,
    order: Order,
    market_price: Decimal,
    commission: Decimal = ZERO,
    market_open: bool = True,
) -> RiskDecision:
    """Run every pre-trade check; the first failure decides. Order: trading state, session,
    then buying power (the answer a client can act on), then the exposure limits.
    `market_price` is the current quote on the side the order would trade (the far touch)."""
    limits = portfolio.limits
    reducing = opening_quantity(portfolio, order) == 0
    if portfolio.trading_state is TradingState.HALTED:
        return RiskDecision.deny(ErrorCode.TRADING_HALTED, "trading is halted")
    if portfolio.trading_state is TradingState.REDUCING and not reducing:
        return RiskDecision.deny(
            ErrorCode.RISK_LIMIT_EXCEEDED,
            "portfolio is reducing: only orders that shrink a position are accepted",
        )
    if not market_open and order.time_in_force.value in ("day", "ioc", "fok"):
        return RiskDecision.deny(ErrorCode.MARKET_CLOSED, "the market is closed")
    if market_price <= 0:
        return RiskDecision.deny(ErrorCode.VALIDATION_ERROR, "no valid market price")
    reservation = required_reservation(portfolio, order, market_price, commission)
    buying_power = portfolio.buying_power()
    if reservation > buying_power:
        return RiskDecision.deny(
            ErrorCode.INSUFFICIENT_FUNDS,
            f"order needs {reservation:.2f} of buying power, {buying_power:.2f} is available",
            required=f"{reservation:.2f}",
            available=f"{buying_power:.2f}",
        )
    price = order.reference_price(market_price)
    notional = order.quantity * price
    if notional > limits.max_order_notional:
        return RiskDecision.deny(
            ErrorCode.RISK_LIMIT_EXCEEDED,
            f"order notional {notional:.2f} exceeds the limit {limits.max_order_notional}",
            notional=f"{notional:.2f}",
            limit=limits.max_order_notional,
        )
    if not reducing:
        if portfolio.daily_loss_limit_breached():
            return RiskDecision.deny(
                ErrorCode.RISK_LIMIT_EXCEEDED,
                f"daily loss limit {limits.daily_loss_limit} reached",
                daily_pnl=f"{portfolio.daily_pnl():.2f}",
            )
        position = portfolio.positions.get(order.symbol)
        held = ZERO if position is None else position.quantity
        pending = portfolio.pending_quantity(order.symbol, order.side) * order.side.sign
        resulting = abs(held + pending + order.signed_quantity()) * price
        if resulting > limits.max_position_size:
            return RiskDecision.deny(
                ErrorCode.RISK_LIMIT_EXCEEDED,
                f"position in {order.symbol} would be {resulting:.2f}, "
                f"above the limit {limits.max_position_size}",
                position_value=f"{resulting:.2f}",
                limit=limits.max_position_size,
            )
        is_new = held == 0 and pending == 0
        open_symbols = {p.symbol for p in portfolio.open_positions()} | {
            r.symbol for r in portfolio.reservations.values()
        }
        if (
            is_new
            and order.symbol not in open_symbols
            and len(open_symbols) >= limits.max_positions
        ):
            return RiskDecision.deny(
                ErrorCode.RISK_LIMIT_EXCEEDED,
                f"already {len(open_symbols)} positions, the limit is {limits.max_positions}",
            )
        equity = portfolio.get_total_value()
        cap = f"{limits.max_concentration * 100:.0f}%"
        if equity <= 0 or resulting / equity > limits.max_concentration:
            return RiskDecision.deny(
                ErrorCode.RISK_LIMIT_EXCEEDED,
                f"{order.symbol} would be more than {cap} of equity",
                position_value=f"{resulting:.2f}",
                equity=f"{equity:.2f}",
            )
    return RiskDecision.approve(reservation)


def accept_order(
    portfolio: Portfolio,
    order: Order,
    market_price: Decimal,
    commission: Decimal = ZERO,
    market_open: bool = True,
) -> RiskDecision:
    """Check `order` and, if approved, accept it and reserve its buying power; if denied,
    reject it with the reason. Either way the order leaves here in a decided state."""
    decision = check_order(portfolio, order, market_price, commission, market_open)
    if decision.approved:
        order.accept()
        portfolio.reserve(order, decision.reservation)
    else:
        assert decision.code is not None and decision.reason is not None
        order.reject(decision.reason, decision.code.value)
    return decision


def side_price(bid: Decimal, ask: Decimal, side: OrderSide) -> Decimal:
    """The far touch: buys pay the ask, sells receive the bid."""
    return ask if side is OrderSide.BUY else bid
