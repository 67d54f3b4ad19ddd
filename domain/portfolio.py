"""Portfolio: cash, buying-power reservations, positions, risk limits and trading state."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID, uuid4

from domain.errors import ValidationError
from domain.orders import Fill, Order, OrderSide
from domain.positions import FillEffect, Position
from domain.values import round_cents, to_decimal

ZERO = Decimal(0)


class TradingState(StrEnum):
    """ACTIVE trades freely; REDUCING only admits orders that shrink a position; HALTED
    admits nothing and open orders are canceled."""

    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


@dataclass(frozen=True)
class RiskLimits:
    """Per-portfolio pre-trade limits. Amounts are in the portfolio's currency."""

    max_position_size: Decimal = Decimal("10000")  # market value of one position
    max_portfolio_risk: Decimal = Decimal("0.02")  # fraction of equity risked per trade
    max_positions: int = 10
    max_leverage: Decimal = Decimal("1.0")  # gross exposure / equity
    max_order_notional: Decimal = Decimal("10000")
    max_concentration: Decimal = Decimal("0.25")  # one position / equity
    daily_loss_limit: Decimal = Decimal("2000")  # equity drop since the session start
    # Market orders reserve buying power at the reference price plus this fraction, so
    # ordinary slippage cannot spend cash that another order has already reserved.
    market_order_buffer: Decimal = Decimal("0.02")

    def __post_init__(self) -> None:
        for name in (
            "max_position_size",
            "max_portfolio_risk",
            "max_leverage",
            "max_order_notional",
            "max_concentration",
            "daily_loss_limit",
        ):
            value = to_decimal(getattr(self, name), name)
            if value <= 0:
                raise ValidationError(name, f"{name} must be positive, got {value}")
            object.__setattr__(self, name, value)
        if not isinstance(self.max_positions, int) or self.max_positions <= 0:
            raise ValidationError("max_positions", "max_positions must be a positive integer")
        for name in ("max_portfolio_risk", "max_concentration"):
            if getattr(self, name) > 1:
                raise ValidationError(name, f"{name} is a fraction and must be at most 1")
        buffer = to_decimal(self.market_order_buffer, "market_order_buffer")
        if not 0 <= buffer < 1:
            raise ValidationError("market_order_buffer", "market_order_buffer must be in [0, 1)")
        object.__setattr__(self, "market_order_buffer", buffer)


@dataclass
class Reservation:
    """Buying power held for the unfilled part of one open order."""

    order_id: UUID
    symbol: str
    side: OrderSide
    quantity: Decimal  # still unfilled
    amount: Decimal  # cash held

    def __post_init__(self) -> None:
        self.quantity = to_decimal(self.quantity, "quantity")
        self.amount = to_decimal(self.amount, "amount")
        if self.quantity < 0 or self.amount < 0:
            raise ValidationError("amount", "a reservation cannot be negative")


@dataclass(frozen=True)
class TradeStatistics:
    trades: int
    won: int
    lost: int
    win_rate: Decimal | None  # fraction of closing trades with a gain
    gross_profit: Decimal
    gross_loss: Decimal  # a positive number
    profit_factor: Decimal | None
    realized_pnl: Decimal
    commissions: Decimal
    net_realized_pnl: Decimal


@dataclass
class Portfolio:
    """Represents a trading account: the cash ledger, positions and the limits guarding it.

    Ledger identity, exact to the cent at every step:
        initial_capital == cash + sum(cost basis) - realized P&L + commissions
    """

    id: UUID = field(default_factory=uuid4)
    name: str = "default"
    currency: str = "USD"
    initial_capital: Decimal = Decimal("100000")
    cash_balance: Decimal | None = None
    positions: dict[str, Position] = field(default_factory=dict)
    reservations: dict[UUID, Reservation] = field(default_factory=dict)
    limits: RiskLimits = field(default_factory=RiskLimits)
    trading_state: TradingState = TradingState.ACTIVE
    day_start_equity: Decimal | None = None
    realized_pnl: Decimal = ZERO
    total_commissions: Decimal = ZERO
    trades_won: int = 0
    trades_lost: int = 0
    gross_profit: Decimal = ZERO
    gross_loss: Decimal = ZERO
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        self.initial_capital = to_decimal(self.initial_capital, "initial_capital")
        if self.initial_capital <= 0:
            raise ValidationError("initial_capital", "initial_capital must be positive")
        if self.initial_capital != round_cents(self.initial_capital):
            raise ValidationError("initial_capital", "initial_capital must be whole cents")
        if self.cash_balance is None:
            self.cash_balance = self.initial_capital
        self.cash_balance = to_decimal(self.cash_balance, "cash_balance")
        if self.day_start_equity is None:
            self.day_start_equity = self.cash_balance
        self.trading_state = TradingState(self.trading_state)

    @property
    def cash(self) -> Decimal:
        assert self.cash_balance is not None  # set in __post_init__
        return self.cash_balance

    # -- valuation ----------------------------------------------------------------------

    def mark(self, prices: dict[str, Decimal]) -> None:
        for symbol, price in prices.items():
            position = self.positions.get(symbol)
            if position is not None and not position.is_closed():
                position.mark(price)

    def open_positions(self) -> list[Position]:
        return [p for p in self.positions.values() if not p.is_closed()]

    def positions_value(self) -> Decimal:
        return sum((p.market_value_or_cost() for p in self.open_positions()), ZERO)

    def gross_exposure(self) -> Decimal:
        return sum((abs(p.market_value_or_cost()) for p in self.open_positions()), ZERO)

    def get_total_value(self) -> Decimal:
        """Equity: cash plus the signed market value of every position."""
        return self.cash + self.positions_value()

    def get_return_percentage(self) -> Decimal:
        return (self.get_total_value() - self.initial_capital) / self.initial_capital * 100

    def unrealized_pnl(self) -> Decimal:
        return sum((p.get_unrealized_pnl() or ZERO for p in self.open_positions()), ZERO)

    def daily_pnl(self) -> Decimal:
        assert self.day_start_equity is not None
        return self.get_total_value() - self.day_start_equity

    def daily_loss_limit_breached(self) -> bool:
        return -self.daily_pnl() >= self.limits.daily_loss_limit

    def start_session(self) -> None:
        """A new trading day: the daily loss limit counts from the current equity."""
        self.day_start_equity = self.get_total_value()

    # -- buying power -------------------------------------------------------------------

    def reserved(self) -> Decimal:
        return sum((r.amount for r in self.reservations.values()), ZERO)

    def buying_power(self) -> Decimal:
        """Equity times leverage, less what positions and open orders already use."""
        equity = self.get_total_value()
        available = equity * self.limits.max_leverage - self.gross_exposure() - self.reserved()
        return max(ZERO, round_cents(available))

    def pending_quantity(self, symbol: str, side: OrderSide) -> Decimal:
        """Unfilled quantity of open orders on one side of a symbol."""
        return sum(
            (
                r.quantity
                for r in self.reservations.values()
                if r.symbol == symbol and r.side is side
            ),
            ZERO,
        )

    def closable_quantity(self, symbol: str, side: OrderSide) -> Decimal:
        """How much of an order on `side` would reduce the position rather than open one,
        after the open orders that already claim to reduce it."""
        position = self.positions.get(symbol)
        if position is None or position.is_closed():
            return ZERO
        if (position.quantity > 0) == (side is OrderSide.BUY):
            return ZERO
        return max(ZERO, abs(position.quantity) - self.pending_quantity(symbol, side))

    def reserve(self, order: Order, amount: Decimal) -> Reservation:
        """Hold `amount` of buying power for `order`; reserving twice replaces, never adds."""
        amount = to_decimal(amount, "amount")
        if amount < 0:
            raise ValidationError("amount", "a reservation cannot be negative")
        reservation = Reservation(
            order.id, order.symbol, order.side, order.remaining_quantity, round_cents(amount)
        )
        self.reservations[order.id] = reservation
        return reservation

    def release(self, order_id: UUID) -> Decimal:
        """Give back whatever is left of an order's reservation; releasing twice is a no-op."""
        reservation = self.reservations.pop(order_id, None)
        return ZERO if reservation is None else reservation.amount

    # -- fills --------------------------------------------------------------------------

    def apply_fill(self, order: Order, fill: Fill) -> FillEffect | None:
        """Apply one execution to the order, its position, cash and reservation.

        Returns None, changing nothing, when the execution id was already applied.
        """
        if order.portfolio_id is not None and order.portfolio_id != self.id:
            raise ValidationError("portfolio_id", f"order {order.id} belongs to another portfolio")
        if not order.apply_fill(fill):
            return None
        position = self.positions.get(order.symbol)
        if position is None:
            position = self.positions[order.symbol] = Position(symbol=order.symbol)
        effect = position.apply(order.side, fill)
        self.cash_balance = self.cash + effect.cash_delta
        self.total_commissions += effect.commission
        if effect.closed_quantity:
            self.realized_pnl += effect.realized_pnl
            if effect.realized_pnl > 0:
                self.trades_won += 1
                self.gross_profit += effect.realized_pnl
            elif effect.realized_pnl < 0:
                self.trades_lost += 1
                self.gross_loss -= effect.realized_pnl
        reservation = self.reservations.get(order.id)
        if reservation is not None:
            # The reservation holds buying power for the opening part only (risk sizes it
            # so), so a fill consumes what its opening part used: the covering part of a
            # flip frees exposure instead of spending it. A better price leaves a remainder
            # that is released when the order ends.
            used = (
                round_cents(effect.opened_quantity * fill.price) + effect.commission
                if effect.opened_quantity
                else ZERO
            )
            reservation.amount = max(ZERO, reservation.amount - used)
            reservation.quantity = order.remaining_quantity
            if order.status.is_terminal:
                self.release(order.id)
        self.updated_at = fill.executed_at
        return effect

    def close_position(
        self, symbol: str, exit_price: Decimal, execution_id: str | None = None
    ) -> Decimal:
        """Close the whole position at `exit_price`; returns the realized P&L."""
        position = self.positions.get(symbol)
        if position is None or position.is_closed():
            raise ValidationError("symbol", f"no open position in {symbol}")
        side = OrderSide.SELL if position.is_long else OrderSide.BUY
        order = Order(
            symbol=symbol, quantity=abs(position.quantity), side=side, portfolio_id=self.id
        )
        order.submit(f"close-{order.id}")
        effect = self.apply_fill(
            order,
            Fill(execution_id or f"close-{order.id}", abs(position.quantity), exit_price),
        )
        assert effect is not None
        return effect.realized_pnl

    # -- state and statistics -----------------------------------------------------------

    def set_trading_state(self, state: TradingState) -> None:
        self.trading_state = TradingState(state)

    def trade_statistics(self) -> TradeStatistics:
        trades = self.trades_won + self.trades_lost
        return TradeStatistics(
            trades=trades,
            won=self.trades_won,
            lost=self.trades_lost,
            win_rate=(Decimal(self.trades_won) / trades) if trades else None,
            gross_profit=self.gross_profit,
            gross_loss=self.gross_loss,
            profit_factor=(self.gross_profit / self.gross_loss) if self.gross_loss else None,
            realized_pnl=self.realized_pnl,
            commissions=self.total_commissions,
            net_realized_pnl=self.realized_pnl - self.total_commissions,
        )

    def ledger_imbalance(self) -> Decimal:
        """Zero when the books balance; anything else is a bug (a cent appeared or vanished)."""
        basis = sum((p.basis for p in self.positions.values()), ZERO)
        return self.cash + basis - self.realized_pnl + self.total_commissions - self.initial_capital
