"""Orders: their types, the status state machine, validation rules and fill accounting."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import TypeVar
from uuid import UUID, uuid4

from domain.errors import IllegalTransitionError, OverfillError, ValidationError
from domain.values import (
    MAX_PRICE,
    QUANTITY_DP,
    QUANTITY_STEP,
    Quantity,
    round_to_tick,
    tick_size_for,
    to_decimal,
)

E = TypeVar("E", bound=StrEnum)

SYMBOL_PATTERN = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """+1 for a buy, -1 for a sell: the direction a fill moves the position."""
        return 1 if self is OrderSide.BUY else -1


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"
    TRAILING_STOP = "trailing_stop"  # a stop that follows the price by trail_price/percent


class OrderClass(StrEnum):
    """What an order is within a structure: a simple order, or the parent of an execution
    algorithm's child orders (TWAP: equal slices in time, VWAP: slices by volume)."""

    SIMPLE = "simple"
    TWAP = "twap"
    VWAP = "vwap"
    BRACKET = "bracket"  # an entry, then a take-profit and a stop-loss that cancel each other
    OCO = "oco"  # two exit legs on a held position: one filling cancels the other
    OTO = "oto"  # an entry, then one exit leg

    @property
    def is_parent(self) -> bool:
        return self is not OrderClass.SIMPLE

    @property
    def is_structure(self) -> bool:
        """An entry and/or exit legs (BracketWorkflow), not an execution algorithm."""
        return self in (OrderClass.BRACKET, OrderClass.OCO, OrderClass.OTO)


# An execution algorithm's bounds: slices per parent, and the time it is worked over.
MIN_SLICES = 2
MAX_SLICES = 100
MIN_DURATION_SECONDS = 60
MAX_DURATION_SECONDS = 7 * 24 * 3600


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class OrderStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    SUBMITTED = "submitted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    PENDING_CANCEL = "pending_cancel"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_open(self) -> bool:
        return not self.is_terminal


S = OrderStatus
TERMINAL_STATUSES = frozenset({S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED})

# Every legal status change, in one place. Fills may race the broker's acknowledgement and
# a cancel request, so ACCEPTED and PENDING_CANCEL may move straight to a fill; a cancel the
# broker refuses sends PENDING_CANCEL back to where the order was (SUBMITTED or
# PARTIALLY_FILLED). PENDING -> SUBMITTED exists for brokers that accept without a separate
# risk step (and the seed's tests).
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset({S.ACCEPTED, S.SUBMITTED, S.REJECTED, S.CANCELED}),
    S.ACCEPTED: frozenset(
        {
            S.SUBMITTED,
            S.PARTIALLY_FILLED,
            S.FILLED,
            S.PENDING_CANCEL,
            S.CANCELED,
            S.EXPIRED,
            S.REJECTED,
        }
    ),
    S.SUBMITTED: frozenset(
        {S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.CANCELED, S.EXPIRED, S.REJECTED}
    ),
    S.PARTIALLY_FILLED: frozenset(
        {S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.CANCELED, S.EXPIRED}
    ),
    S.PENDING_CANCEL: frozenset(
        {S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED}
    ),
    S.FILLED: frozenset(),
    S.CANCELED: frozenset(),
    S.EXPIRED: frozenset(),
    S.REJECTED: frozenset(),
}


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    return target in TRANSITIONS[current]


def validate_symbol(symbol: object) -> str:
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.match(symbol):
        raise ValidationError(
            "symbol", f"symbol must be 1-10 upper-case letters, digits or dots, got {symbol!r}"
        )
    return symbol


def validate_order_price(value: object, field_name: str) -> Decimal:
    """An order price must be positive, sane and on the tick grid (no sub-penny above $1)."""
    price = to_decimal(value, field_name)
    if price <= 0:
        raise ValidationError(field_name, f"{field_name} must be positive, got {price}")
    if price > MAX_PRICE:
        raise ValidationError(field_name, f"{field_name} must be at most {MAX_PRICE}, got {price}")
    tick = tick_size_for(price)
    if price % tick != 0:
        raise ValidationError(
            field_name, f"{field_name} {price} is not a multiple of the tick size {tick}"
        )
    return price


MAX_TRAIL_PERCENT = Decimal(50)
MIN_STOP = Decimal("0.0001")
TRAIL_PERCENT_STEP = Decimal("0.01")


def validate_trail_price(value: object) -> Decimal:
    """A trailing stop's distance in dollars: positive and on the tick grid."""
    return validate_order_price(value, "trail_price")


def validate_trail_percent(value: object) -> Decimal:
    """A trailing stop's distance in percent of the mark: above 0, at most 50, in 0.01."""
    percent = to_decimal(value, "trail_percent")
    if not 0 < percent <= MAX_TRAIL_PERCENT:
        raise ValidationError(
            "trail_percent", f"trail_percent must be above 0 and at most {MAX_TRAIL_PERCENT}"
        )
    if percent % TRAIL_PERCENT_STEP != 0:
        raise ValidationError("trail_percent", "trail_percent has more than 2 decimal places")
    return percent


def check_trail(
    order_type: OrderType, trail_price: Decimal | None, trail_percent: Decimal | None
) -> None:
    """A trailing stop has exactly one of trail_price and trail_percent; others neither."""
    trailing = order_type is OrderType.TRAILING_STOP
    if trailing and (trail_price is None) == (trail_percent is None):
        raise ValidationError(
            "trail_price", "a trailing_stop order needs one of trail_price and trail_percent"
        )
    if not trailing and trail_price is not None:
        raise ValidationError("trail_price", f"a {order_type.value} order takes no trail_price")
    if not trailing and trail_percent is not None:
        raise ValidationError("trail_percent", f"a {order_type.value} order takes no trail_percent")


def check_legs(
    order_class: OrderClass,
    side: OrderSide,
    order_type: OrderType,
    limit_price: Decimal | None,
    take_profit: Decimal | None,
    stop_loss: Decimal | None,
    stop_loss_limit: Decimal | None,
) -> None:
    """The exit legs of a bracket, OCO or OTO order, or a ValidationError naming the field.

    `side` is the entry's side (bracket, oto) or the exit's side (oco); the exits of a buy
    entry sell. For a long (exits sell) the take-profit is above the stop-loss, and above
    a limit entry's price while the stop is below it; a short mirrors this. A stop-limit
    stop-loss's limit is on the far side of its stop (a sell's limit at or below it)."""
    if not order_class.is_structure:  # simple, or an execution algorithm's parent
        if take_profit is not None:
            raise ValidationError(
                "take_profit", "take_profit needs order_class bracket, oco or oto"
            )
        if stop_loss is not None:
            raise ValidationError("stop_loss", "stop_loss needs order_class bracket, oco or oto")
        return
    if order_class is OrderClass.OTO:
        if (take_profit is None) == (stop_loss is None):
            raise ValidationError(
                "take_profit", "an oto order needs exactly one of take_profit and stop_loss"
            )
    else:
        if take_profit is None:
            raise ValidationError(
                "take_profit.limit_price", f"a {order_class.value} order needs a take_profit"
            )
        if stop_loss is None:
            raise ValidationError(
                "stop_loss.stop_price", f"a {order_class.value} order needs a stop_loss"
            )
    if order_class is OrderClass.OCO:
        exits_sell = side is OrderSide.SELL
    else:
        if order_type not in (OrderType.MARKET, OrderType.LIMIT):
            raise ValidationError(
                "order_type", f"a {order_class.value} order's entry is market or limit"
            )
        exits_sell = side is OrderSide.BUY
    long_ = "a long" if exits_sell else "a short"
    if take_profit is not None and stop_loss is not None:
        if exits_sell and take_profit <= stop_loss:
            raise ValidationError(
                "take_profit.limit_price", f"{long_}'s take-profit must be above its stop-loss"
            )
        if not exits_sell and take_profit >= stop_loss:
            raise ValidationError(
                "take_profit.limit_price", f"{long_}'s take-profit must be below its stop-loss"
            )
    if limit_price is not None and order_class is not OrderClass.OCO:
        if take_profit is not None and (take_profit <= limit_price) == exits_sell:
            where = "above" if exits_sell else "below"
            raise ValidationError(
                "take_profit.limit_price",
                f"{long_}'s take-profit must be {where} the entry's price",
            )
        if stop_loss is not None and (stop_loss >= limit_price) == exits_sell:
            where = "below" if exits_sell else "above"
            raise ValidationError(
                "stop_loss.stop_price",
                f"{long_}'s stop-loss must be {where} the entry's price",
            )
    if stop_loss is not None and stop_loss_limit is not None:
        if (stop_loss_limit > stop_loss) == exits_sell and stop_loss_limit != stop_loss:
            where = "at or below" if exits_sell else "at or above"
            raise ValidationError(
                "stop_loss.limit_price", f"a stop-loss limit must be {where} its stop_price"
            )


def trailing_stop_price(
    side: OrderSide, mark: Decimal, trail_price: Decimal | None, trail_percent: Decimal | None
) -> Decimal:
    """Where a trailing stop stands for its mark: a trail below the high-water mark for a
    sell, above the low-water mark for a buy. On the tick grid, rounded toward the mark (a
    sell's stop up, a buy's down) so it never trails by more than asked; never below one
    tick."""
    if trail_price is not None:
        distance = trail_price
    else:
        assert trail_percent is not None
        distance = mark * trail_percent / 100
    if side is OrderSide.SELL:
        raw = mark - distance
        tick = tick_size_for(max(raw, MIN_STOP))
        return max(raw.quantize(tick, rounding=ROUND_CEILING), tick)
    raw = mark + distance
    return raw.quantize(tick_size_for(raw), rounding=ROUND_FLOOR)


def split_quantity(quantity: Decimal, weights: list[Decimal]) -> list[Decimal]:
    """`quantity` split in proportion to `weights` (one slice each), in whole shares when
    the quantity is whole (else in steps of 10^-6): each slice gets the floor of its share
    and the leftover steps go, one each, to the slices with the largest remainders (the
    earliest first on a tie). The slices add up to `quantity` exactly; some may be 0.
    Equal weights when every weight is 0."""
    if not weights:
        raise ValidationError("slices", "at least one slice")
    if any(w < 0 for w in weights):
        raise ValidationError("weights", "weights cannot be negative")
    total = sum(weights, Decimal(0))
    if total == 0:
        weights, total = [Decimal(1)] * len(weights), Decimal(len(weights))
    step = Decimal(1) if quantity == quantity.to_integral_value() else QUANTITY_STEP
    units = int(quantity / step)
    exact = [Decimal(units) * w / total for w in weights]
    floors = [int(x) for x in exact]
    leftover = units - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:leftover]:
        floors[i] += 1
    return [Decimal(n) * step for n in floors]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Fill:
    """One execution reported by the broker; `execution_id` makes applying it idempotent."""

    execution_id: str
    quantity: Decimal
    price: Decimal
    commission: Decimal = Decimal(0)
    executed_at: datetime = field(default_factory=_utcnow)

    def __post_init__(self) -> None:
        if not self.execution_id:
            raise ValidationError("execution_id", "execution_id must not be empty")
        object.__setattr__(self, "quantity", Quantity(self.quantity).value)
        price = to_decimal(self.price, "price")
        if price <= 0:
            raise ValidationError("price", f"fill price must be positive, got {price}")
        object.__setattr__(self, "price", price)
        commission = to_decimal(self.commission, "commission")
        if commission < 0:
            raise ValidationError("commission", f"commission must not be negative: {commission}")
        object.__setattr__(self, "commission", commission)
        if self.executed_at.tzinfo is None:
            raise ValidationError("executed_at", "executed_at must be timezone-aware")

    @property
    def notional(self) -> Decimal:
        """Exact quantity x price, before settlement rounding."""
        return self.quantity * self.price


@dataclass
class Order:
    """Represents an order to buy or sell `quantity` shares of `symbol`.

    Checks its own invariants on construction; every status change goes through the
    TRANSITIONS table, and fills are applied at most once per execution id.
    """

    symbol: str
    quantity: Decimal
    side: OrderSide
    order_type: OrderType = OrderType.MARKET
    time_in_force: TimeInForce = TimeInForce.DAY
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    order_class: OrderClass = OrderClass.SIMPLE
    parent_order_id: UUID | None = None
    id: UUID = field(default_factory=uuid4)
    portfolio_id: UUID | None = None
    client_order_id: str | None = None
    status: OrderStatus = OrderStatus.PENDING
    filled_quantity: Decimal = Decimal(0)
    # Exact sum of quantity x price over fills; the average is derived from it so that
    # repeated partial fills never accumulate rounding error.
    filled_notional: Decimal = Decimal(0)
    commission: Decimal = Decimal(0)
    broker_order_id: str | None = None
    reject_code: str | None = None
    reject_reason: str | None = None
    created_at: datetime = field(default_factory=_utcnow)
    updated_at: datetime | None = None
    submitted_at: datetime | None = None
    filled_at: datetime | None = None
    closed_at: datetime | None = None
    execution_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.symbol = validate_symbol(self.symbol)
        quantity = to_decimal(self.quantity, "quantity")
        if quantity <= 0:
            raise ValidationError("quantity", f"Order quantity must be positive, got {quantity}")
        self.quantity = Quantity(quantity).value
        self.side = _enum(OrderSide, self.side, "side")
        self.order_type = _enum(OrderType, self.order_type, "order_type")
        self.time_in_force = _enum(TimeInForce, self.time_in_force, "time_in_force")
        self.order_class = _enum(OrderClass, self.order_class, "order_class")
        self.status = _enum(OrderStatus, self.status, "status")
        needs_limit = self.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        needs_stop = self.order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
        label = self.order_type.value.title()
        if needs_limit and self.limit_price is None:
            raise ValidationError("limit_price", f"{label} order requires a limit_price")
        if needs_stop and self.stop_price is None:
            raise ValidationError("stop_price", f"{label} order requires a stop_price")
        if not needs_limit and self.limit_price is not None:
            raise ValidationError("limit_price", f"{label} order must not have a limit_price")
        if not needs_stop and self.stop_price is not None:
            raise ValidationError("stop_price", f"{label} order must not have a stop_price")
        if self.limit_price is not None:
            self.limit_price = validate_order_price(self.limit_price, "limit_price")
        if self.stop_price is not None:
            self.stop_price = validate_order_price(self.stop_price, "stop_price")
        if self.trail_price is not None:
            self.trail_price = validate_trail_price(self.trail_price)
        if self.trail_percent is not None:
            self.trail_percent = validate_trail_percent(self.trail_percent)
        check_trail(self.order_type, self.trail_price, self.trail_percent)
        if self.client_order_id is not None and not (0 < len(self.client_order_id) <= 128):
            raise ValidationError("client_order_id", "client_order_id must be 1-128 characters")
        self.filled_quantity = to_decimal(self.filled_quantity, "filled_quantity")
        if not 0 <= self.filled_quantity <= self.quantity:
            raise ValidationError(
                "filled_quantity", "filled_quantity must be between 0 and the order quantity"
            )
        if self.created_at.tzinfo is None:
            raise ValidationError("created_at", "created_at must be timezone-aware")

    # -- derived values -------------------------------------------------------------------

    @property
    def remaining_quantity(self) -> Decimal:
        return self.quantity - self.filled_quantity

    @property
    def average_fill_price(self) -> Decimal | None:
        """Quantity-weighted average of the fill prices, rounded to the tick."""
        if self.filled_quantity == 0:
            return None
        return round_to_tick(self.filled_notional / self.filled_quantity)

    @property
    def is_open(self) -> bool:
        return self.status.is_open

    @property
    def is_fractional(self) -> bool:
        return self.quantity != self.quantity.to_integral_value()

    # -- state machine --------------------------------------------------------------------

    def transition_to(self, target: OrderStatus, at: datetime | None = None) -> None:
        if not can_transition(self.status, target):
            raise IllegalTransitionError(self.id, self.status.value, target.value)
        now = at or _utcnow()
        self.status = target
        self.updated_at = now
        if target.is_terminal:
            self.closed_at = now

    def accept(self, at: datetime | None = None) -> None:
        """Risk has approved the order and buying power is reserved."""
        self.transition_to(OrderStatus.ACCEPTED, at)

    def submit(self, broker_order_id: str, at: datetime | None = None) -> None:
        """The broker acknowledged the order under `broker_order_id`.

        A fill may overtake the acknowledgement; then only the broker id is recorded.
        """
        if not broker_order_id:
            raise ValidationError("broker_order_id", "broker_order_id must not be empty")
        if self.status in (OrderStatus.PENDING, OrderStatus.ACCEPTED):
            self.transition_to(OrderStatus.SUBMITTED, at)
        elif self.status.is_terminal and self.status is not OrderStatus.FILLED:
            raise IllegalTransitionError(self.id, self.status.value, OrderStatus.SUBMITTED.value)
        self.broker_order_id = broker_order_id
        self.submitted_at = self.submitted_at or at or _utcnow()

    def fill(
        self,
        quantity: Decimal,
        price: Decimal,
        execution_id: str | None = None,
        commission: Decimal = Decimal(0),
        at: datetime | None = None,
    ) -> bool:
        """Apply one execution; returns False (and changes nothing) if it was already applied."""
        execution = Fill(
            execution_id=execution_id or f"{self.id}-{len(self.execution_ids) + 1}",
            quantity=quantity,
            price=price,
            commission=commission,
            executed_at=at or _utcnow(),
        )
        return self.apply_fill(execution)

    def apply_fill(self, execution: Fill) -> bool:
        if execution.execution_id in self.execution_ids:
            return False
        if execution.quantity > self.remaining_quantity:
            raise OverfillError(self.id, self.quantity, self.filled_quantity, execution.quantity)
        filled = self.filled_quantity + execution.quantity
        target = OrderStatus.FILLED if filled == self.quantity else OrderStatus.PARTIALLY_FILLED
        if self.status is OrderStatus.PENDING_CANCEL and target is OrderStatus.PARTIALLY_FILLED:
            target = OrderStatus.PENDING_CANCEL  # still waiting for the broker's cancel answer
        elif self.status.is_terminal:
            # A fill reported after our cancel/expiry was still executed at the broker: the
            # money moved, so the ledger takes it, but a closed order stays closed.
            target = self.status
        elif not can_transition(self.status, target):
            raise IllegalTransitionError(self.id, self.status.value, target.value)
        self.filled_quantity = filled
        self.filled_notional += execution.notional
        self.commission += execution.commission
        self.execution_ids.add(execution.execution_id)
        if target is not self.status:
            self.transition_to(target, execution.executed_at)
        self.updated_at = execution.executed_at
        if target is OrderStatus.FILLED:
            self.filled_at = execution.executed_at
        return True

    def request_cancel(self, at: datetime | None = None) -> None:
        """The client asked to cancel; the order waits for the broker's answer."""
        if self.status in (OrderStatus.PENDING, OrderStatus.ACCEPTED):
            self.transition_to(OrderStatus.CANCELED, at)  # never reached the broker
        else:
            self.transition_to(OrderStatus.PENDING_CANCEL, at)

    def cancel(self, reason: str | None = None, at: datetime | None = None) -> None:
        """The broker confirmed the cancel; what was filled stays filled."""
        self.transition_to(OrderStatus.CANCELED, at)
        if reason:
            self.reject_reason = reason

    def cancel_refused(self, at: datetime | None = None) -> None:
        """The broker refused the cancel (too late): the order goes back to working."""
        working = OrderStatus.PARTIALLY_FILLED if self.filled_quantity else OrderStatus.SUBMITTED
        self.transition_to(working, at)

    def expire(self, at: datetime | None = None) -> None:
        self.transition_to(OrderStatus.EXPIRED, at)

    def reject(self, reason: str, code: str | None = None, at: datetime | None = None) -> None:
        if not reason:
            raise ValidationError("reason", "a rejection needs a reason")
        self.transition_to(OrderStatus.REJECTED, at)
        self.reject_reason = reason
        self.reject_code = code

    # -- pricing helpers --------------------------------------------------------------------

    def reference_price(self, market_price: Decimal) -> Decimal:
        """The worst price this order can reasonably be expected to execute at, for risk.

        Limit prices bound the execution; stop orders trigger at their stop; market orders
        execute near the market.
        """
        if self.limit_price is not None:
            return self.limit_price
        if self.stop_price is not None:
            worst = max if self.side is OrderSide.BUY else min
            return worst(self.stop_price, market_price)
        if self.order_type is OrderType.TRAILING_STOP:
            # It triggers one trail away from the best price seen; from here, that is a
            # trail away from the market (a buy's stop above it, a sell's below).
            return trailing_stop_price(
                self.side, market_price, self.trail_price, self.trail_percent
            )
        return market_price

    def signed_quantity(self) -> Decimal:
        return self.quantity * self.side.sign


def _enum(kind: type[E], value: object, field_name: str) -> E:
    if isinstance(value, kind):
        return value
    try:
        return kind(str(value))
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValidationError(
            field_name, f"{field_name} must be one of {allowed}, got {value!r}"
        ) from None


__all__ = [
    "QUANTITY_DP",
    "TERMINAL_STATUSES",
    "TRANSITIONS",
    "Fill",
    "Order",
    "OrderClass",
    "OrderSide",
    "OrderStatus",
    "OrderType",
    "TimeInForce",
    "can_transition",
    "check_trail",
    "split_quantity",
    "trailing_stop_price",
    "validate_order_price",
    "validate_trail_percent",
    "validate_trail_price",
    "validate_symbol",
]
