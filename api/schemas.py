"""Request and response bodies of the API, named by role (OrderCreate, OrderPublic, ...).

Amounts, prices and quantities travel as decimal strings ("150.50"), never as JSON numbers:
a JSON number with a fraction is a binary float on most clients. The request types accept
an integer too, and refuse fractional JSON numbers with a field-level reason. Every numeric
input is bounded before any arithmetic touches it (`_decimal_input`): at most
MAX_INTEGER_DIGITS digits before the point and MAX_FRACTION_DIGITS after it, finite, so
that no rule of a field (quantize, a tick's remainder) can overflow the decimal context
and answer 500 instead of the field's 422. Only pydantic is imported here, so the Python
client can parse answers with these same models.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from domain.errors import ErrorCode, ValidationError
from domain.market import Timeframe
from domain.orders import (
    MAX_DURATION_SECONDS,
    MAX_SLICES,
    MIN_DURATION_SECONDS,
    MIN_SLICES,
    OrderClass,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
    check_legs,
    check_trail,
    validate_order_price,
    validate_trail_percent,
    validate_trail_price,
)
from domain.portfolio import TradingState
from domain.values import Quantity, decimal_text

MAX_INTEGER_DIGITS = 20
MAX_FRACTION_DIGITS = 20
DECIMAL_TEXT = re.compile(
    rf"^-?[0-9]{{1,{MAX_INTEGER_DIGITS}}}(\.[0-9]{{1,{MAX_FRACTION_DIGITS}}})?$"
)
# Far above any real order; keeps every amount derived from it inside the store's columns.
MAX_ORDER_QUANTITY = Decimal("1000000000")
SYMBOL_REGEX = r"^[A-Z][A-Z0-9.]{0,9}$"
CLIENT_ORDER_ID_REGEX = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


_TOO_LARGE = f"must have at most {MAX_INTEGER_DIGITS} digits before the decimal point"


def _decimal_input(value: Any) -> Decimal:
    """A decimal string or an integer; floats and exponents are refused, not rounded, and
    the size is checked before anything computes with the value."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError('must be a decimal string such as "150.50" (or an integer), not a float')
    if isinstance(value, int):
        if abs(value) >= 10**MAX_INTEGER_DIGITS:  # an int comparison: no decimal context
            raise ValueError(_TOO_LARGE)
        return Decimal(value)
    if isinstance(value, Decimal):
        return _bounded(value)
    if not isinstance(value, str) or not DECIMAL_TEXT.match(value):
        raise ValueError('must be a decimal string such as "150.50"')
    return Decimal(value)  # the pattern bounds both parts


decimal_input = _decimal_input  # for inputs outside a body (query parameters)


def _bounded(value: Decimal) -> Decimal:
    """A Decimal built elsewhere (Python callers): finite and within the digits of text.
    `adjusted()` and the exponent are read from the representation, not computed."""
    if not value.is_finite():
        raise ValueError("must be a finite number")
    if value and value.adjusted() >= MAX_INTEGER_DIGITS:
        raise ValueError(_TOO_LARGE)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_FRACTION_DIGITS:
        raise ValueError(f"must have at most {MAX_FRACTION_DIGITS} decimal places")
    return value


def _order_quantity(value: Decimal) -> Decimal:
    quantity = Quantity(value).value  # positive, at most 6 decimal places
    if quantity > MAX_ORDER_QUANTITY:
        raise ValueError(f"quantity must be at most {MAX_ORDER_QUANTITY}")
    return quantity


def _plain(value: Decimal) -> str:
    return decimal_text(value, keep_scale=True)  # "-0.00" (a rounded loss) reads "0.00"


_DECIMAL_SCHEMA = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "examples": ["150.50"]}

# A decimal in a response: always fixed-point text, never "1E+2".
DecimalStr = Annotated[
    Decimal, PlainSerializer(_plain, return_type=str), WithJsonSchema(_DECIMAL_SCHEMA)
]
QuantityIn = Annotated[
    Decimal,
    BeforeValidator(_decimal_input),
    AfterValidator(_order_quantity),
    WithJsonSchema(
        {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "examples": ["100", "0.5"]}
    ),
]


def _limit_price(value: Decimal) -> Decimal:
    return validate_order_price(value, "limit_price")


def _stop_price(value: Decimal) -> Decimal:
    return validate_order_price(value, "stop_price")


_PRICE_SCHEMA = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "examples": ["150.50"]}
LimitPriceIn = Annotated[
    Decimal,
    BeforeValidator(_decimal_input),
    AfterValidator(_limit_price),
    WithJsonSchema(_PRICE_SCHEMA),
]
StopPriceIn = Annotated[
    Decimal,
    BeforeValidator(_decimal_input),
    AfterValidator(_stop_price),
    WithJsonSchema(_PRICE_SCHEMA),
]
TrailPriceIn = Annotated[
    Decimal,
    BeforeValidator(_decimal_input),
    AfterValidator(validate_trail_price),
    WithJsonSchema(_PRICE_SCHEMA),
]
TrailPercentIn = Annotated[
    Decimal,
    BeforeValidator(_decimal_input),
    AfterValidator(validate_trail_percent),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "examples": ["1.5"]}),
]
Symbol = Annotated[str, Field(pattern=SYMBOL_REGEX, examples=["AAPL"])]


# -- orders ------------------------------------------------------------------------------------


class ExecutionIn(BaseModel):
    """An execution algorithm: the order becomes a parent worked as `slices` child orders
    over `duration_seconds`, the first at once (TWAP: equal slices; VWAP: slices weighted
    by the volume profile of recent minute bars)."""

    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["twap", "vwap"]
    duration_seconds: Annotated[
        int, Field(strict=True, ge=MIN_DURATION_SECONDS, le=MAX_DURATION_SECONDS)
    ]
    slices: Annotated[int, Field(strict=True, ge=MIN_SLICES, le=MAX_SLICES)]


class TakeProfitIn(BaseModel):
    """A bracket's, OCO's or OTO's take-profit: a limit order closing the position."""

    model_config = ConfigDict(extra="forbid")

    limit_price: LimitPriceIn


class StopLossIn(BaseModel):
    """A bracket's, OCO's or OTO's stop-loss: a stop (or, with limit_price, a stop-limit)
    order closing the position."""

    model_config = ConfigDict(extra="forbid")

    stop_price: StopPriceIn
    limit_price: LimitPriceIn | None = None


class OrderCreate(BaseModel):
    """A new order. `order_type` defaults from the prices given: limit_price -> limit,
    stop_price -> stop, both -> stop_limit, neither -> market."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "symbol": "AAPL",
                    "quantity": "100",
                    "side": "buy",
                    "order_type": "limit",
                    "limit_price": "150.50",
                    "time_in_force": "day",
                    "client_order_id": "breakout-2024-01-15-001",
                    "reason": "breakout_strategy",
                }
            ]
        },
    )

    symbol: Symbol
    quantity: QuantityIn
    side: OrderSide
    order_type: OrderType | None = None
    limit_price: LimitPriceIn | None = None
    stop_price: StopPriceIn | None = None
    trail_price: TrailPriceIn | None = Field(
        default=None,
        description="trailing_stop: the stop trails the best price seen by this many dollars",
    )
    trail_percent: TrailPercentIn | None = Field(
        default=None,
        description="trailing_stop: or by this percent of the best price seen (0-50]",
    )
    time_in_force: TimeInForce = TimeInForce.DAY
    execution: ExecutionIn | None = Field(
        default=None,
        description="Work a market or limit order as a parent of timed child orders "
        "(TWAP/VWAP); GET /orders/{id} lists the children as `legs`.",
    )
    order_class: OrderClass = Field(
        default=OrderClass.SIMPLE,
        description="simple; bracket (a market or limit entry, then take_profit and "
        "stop_loss legs for what it filled, one cancelling the other); oco (take_profit and "
        "stop_loss on a held position: `side` is the exit's side); oto (an entry, then one "
        "leg). twap/vwap are set by `execution`.",
    )
    take_profit: TakeProfitIn | None = None
    stop_loss: StopLossIn | None = None
    client_order_id: Annotated[str, Field(pattern=CLIENT_ORDER_ID_REGEX)] | None = Field(
        default=None,
        description="Idempotency key: the same value from the same portfolio always names "
        "the same order. Generated when absent.",
    )
    reason: Annotated[str, Field(max_length=200)] | None = Field(
        default=None, description="Free text for the client's records (logged, not stored)."
    )

    @model_validator(mode="after")
    def _prices_match_type(self) -> OrderCreate:
        trailing = self.trail_price is not None or self.trail_percent is not None
        if self.order_type is None and trailing:
            self.order_type = OrderType.TRAILING_STOP
        if self.order_type is None:
            self.order_type = {
                (False, False): OrderType.MARKET,
                (True, False): OrderType.LIMIT,
                (False, True): OrderType.STOP,
                (True, True): OrderType.STOP_LIMIT,
            }[(self.limit_price is not None, self.stop_price is not None)]
        needs_limit = self.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        needs_stop = self.order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
        kind = self.order_type.value
        # The domain's error names the field, so the envelope can point at it.
        if needs_limit and self.limit_price is None:
            raise ValidationError("limit_price", f"a {kind} order needs a limit_price")
        if needs_stop and self.stop_price is None:
            raise ValidationError("stop_price", f"a {kind} order needs a stop_price")
        if not needs_limit and self.limit_price is not None:
            raise ValidationError("limit_price", f"a {kind} order takes no limit_price")
        if not needs_stop and self.stop_price is not None:
            raise ValidationError("stop_price", f"a {kind} order takes no stop_price")
        check_trail(self.order_type, self.trail_price, self.trail_percent)
        if self.order_type is OrderType.TRAILING_STOP and self.time_in_force in (
            TimeInForce.IOC,
            TimeInForce.FOK,
        ):
            raise ValidationError("time_in_force", "a trailing_stop order is day or gtc")
        if self.order_class is OrderClass.OCO:
            # The exit's price is the take-profit's: the parent is a limit sell (or buy).
            if self.limit_price is not None or self.stop_price is not None:
                raise ValidationError(
                    "limit_price", "an oco order's prices are its take_profit and stop_loss"
                )
            if self.order_type is not OrderType.MARKET or self.take_profit is None:
                raise ValidationError("take_profit.limit_price", "an oco order needs take_profit")
            self.order_type = OrderType.LIMIT
            self.limit_price = self.take_profit.limit_price
        if self.execution is None and self.order_class in (OrderClass.TWAP, OrderClass.VWAP):
            raise ValidationError("order_class", "twap and vwap are set by `execution`")
        if self.execution is not None:
            if self.order_class not in (OrderClass.SIMPLE, self.execution.algorithm):
                raise ValidationError("order_class", "an execution algorithm is not a structure")
            self.order_class = OrderClass(self.execution.algorithm)
        check_legs(
            self.order_class,
            self.side,
            self.order_type,
            self.limit_price,
            None if self.take_profit is None else self.take_profit.limit_price,
            None if self.stop_loss is None else self.stop_loss.stop_price,
            None if self.stop_loss is None else self.stop_loss.limit_price,
        )
        if self.order_class.is_structure and self.time_in_force not in (
            TimeInForce.DAY,
            TimeInForce.GTC,
        ):
            raise ValidationError("time_in_force", "a bracket, oco or oto order is day or gtc")
        if self.execution is not None:
            if self.order_type not in (OrderType.MARKET, OrderType.LIMIT):
                raise ValidationError(
                    "execution", "an execution algorithm works a market or limit order"
                )
            if self.time_in_force not in (TimeInForce.DAY, TimeInForce.GTC):
                raise ValidationError("time_in_force", "an algorithm's order is day or gtc")
        return self


class OrderLeg(BaseModel):
    """One child of a parent order: a TWAP/VWAP slice, or a bracket's, OCO's or OTO's
    entry or exit leg."""

    order_id: UUID
    client_order_id: str
    side: OrderSide | None = None
    order_type: OrderType | None = None
    limit_price: DecimalStr | None = None
    stop_price: DecimalStr | None = None
    status: OrderStatus
    quantity: DecimalStr
    filled_quantity: DecimalStr
    average_fill_price: DecimalStr | None


class OrderPublic(BaseModel):
    """An order as the store holds it. `id` repeats `order_id` (the seed's GET example).
    Built from an OrderSnapshot with `model_validate(snapshot, from_attributes=True)`."""

    order_id: UUID
    id: UUID = Field(validation_alias="order_id")
    client_order_id: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    time_in_force: TimeInForce
    quantity: DecimalStr
    limit_price: DecimalStr | None
    stop_price: DecimalStr | None
    trail_price: DecimalStr | None = None
    trail_percent: DecimalStr | None = None
    order_class: OrderClass = OrderClass.SIMPLE
    parent_order_id: UUID | None = None
    legs: list[OrderLeg] | None = Field(
        default=None, description="A parent's child orders, on GET /orders/{id} only"
    )
    status: OrderStatus
    filled_quantity: DecimalStr
    remaining_quantity: DecimalStr
    average_fill_price: DecimalStr | None
    commission: DecimalStr
    broker_order_id: str | None
    reject_code: str | None
    reject_reason: str | None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    filled_at: datetime | None
    closed_at: datetime | None
    expires_at: datetime | None


class OrderPlaced(OrderPublic):
    """The answer to POST /orders: the order once risk accepted it, and a message."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "order_id": "550e8400-e29b-41d4-a716-446655440000",
                    "id": "550e8400-e29b-41d4-a716-446655440000",
                    "client_order_id": "breakout-2024-01-15-001",
                    "symbol": "AAPL",
                    "side": "buy",
                    "order_type": "limit",
                    "time_in_force": "day",
                    "quantity": "100",
                    "limit_price": "150.50",
                    "stop_price": None,
                    "status": "accepted",
                    "filled_quantity": "0",
                    "remaining_quantity": "100",
                    "average_fill_price": None,
                    "commission": "0",
                    "broker_order_id": None,
                    "reject_code": None,
                    "reject_reason": None,
                    "created_at": "2024-01-15T14:29:45Z",
                    "updated_at": "2024-01-15T14:29:45Z",
                    "submitted_at": None,
                    "filled_at": None,
                    "closed_at": None,
                    "expires_at": "2024-01-15T21:00:00Z",
                    "message": "order accepted",
                }
            ]
        }
    )

    message: str


class CanceledOrder(BaseModel):
    """One order of a cancel-all: its status after the cancel (`canceled`, `pending_cancel`
    while the broker has not confirmed, or the terminal status it reached first).
    `delivered` is false only when the cancel could not reach the order: retry."""

    order_id: UUID
    status: OrderStatus
    delivered: bool


class CancelAllResult(BaseModel):
    """The answer to DELETE /orders: every order that was open, oldest first."""

    orders: list[CanceledOrder]


class OrderPage(BaseModel):
    """A page of orders, newest first; pass `next_cursor` as `cursor` for the next page."""

    orders: list[OrderPublic]
    next_cursor: str | None


# -- portfolio ---------------------------------------------------------------------------------


class PortfolioPublic(BaseModel):
    """The portfolio marked at current quotes (the mid); money rounded to the cent."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "6f1c1a4e-3b5d-4f7e-9a51-0c2b7d8e9f10",
                    "name": "Main Trading Portfolio",
                    "currency": "USD",
                    "trading_state": "active",
                    "initial_capital": "95185.20",
                    "cash_balance": "85450.75",
                    "reserved": "0.00",
                    "buying_power": "85450.75",
                    "positions_value": "13314.68",
                    "total_value": "98765.43",
                    "unrealized_pnl": "1234.56",
                    "realized_pnl": "2345.67",
                    "total_pnl": "3580.23",
                    "return_percentage": "3.76",
                    "day_pnl": "120.40",
                    "commissions_paid": "45.00",
                    "open_positions": 3,
                    "total_trades": 45,
                    "win_rate": "66.67",
                    "as_of": "2024-01-15T14:32:45Z",
                }
            ]
        }
    )

    id: UUID
    name: str
    currency: str
    trading_state: TradingState
    initial_capital: DecimalStr
    cash_balance: DecimalStr
    reserved: DecimalStr
    buying_power: DecimalStr
    positions_value: DecimalStr
    total_value: DecimalStr
    unrealized_pnl: DecimalStr
    realized_pnl: DecimalStr
    total_pnl: DecimalStr
    return_percentage: DecimalStr
    day_pnl: DecimalStr
    commissions_paid: DecimalStr
    open_positions: int
    total_trades: int
    win_rate: DecimalStr | None = Field(description="Percent of closing trades with a gain")
    as_of: datetime


class PositionPublic(BaseModel):
    id: UUID
    symbol: str
    side: Literal["long", "short"]
    quantity: DecimalStr
    average_entry_price: DecimalStr
    cost_basis: DecimalStr
    current_market_price: DecimalStr | None
    position_value: DecimalStr | None
    unrealized_pnl: DecimalStr | None
    realized_pnl: DecimalStr
    commission_paid: DecimalStr
    opened_at: datetime | None
    updated_at: datetime | None
    stop_loss_price: DecimalStr | None = None
    take_profit_price: DecimalStr | None = None


class ProtectionIn(BaseModel):
    """The levels a guard keeps on a position: it closes the position at market when the
    last trade reaches the stop-loss or the take-profit (at least one of them)."""

    model_config = ConfigDict(extra="forbid")

    stop_loss_price: StopPriceIn | None = None
    take_profit_price: LimitPriceIn | None = None
    check_seconds: Annotated[int, Field(strict=True, ge=1, le=3600)] = 1

    @model_validator(mode="after")
    def _some_level(self) -> ProtectionIn:
        if self.stop_loss_price is None and self.take_profit_price is None:
            raise ValidationError("stop_loss_price", "give a stop_loss_price or take_profit_price")
        return self


class ProtectionPublic(BaseModel):
    symbol: str
    side: Literal["long", "short"]
    quantity: DecimalStr
    stop_loss_price: DecimalStr | None
    take_profit_price: DecimalStr | None
    guard: str = Field(description="the guard's workflow id")


class PositionList(BaseModel):
    positions: list[PositionPublic]


# -- market data -------------------------------------------------------------------------------


class QuotePublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "symbol": "AAPL",
                    "bid_price": "152.25",
                    "ask_price": "152.30",
                    "bid_size": "100",
                    "ask_size": "200",
                    "last_price": "152.28",
                    "timestamp": "2024-01-15T14:32:45.123Z",
                }
            ]
        }
    )

    symbol: str
    bid_price: DecimalStr
    ask_price: DecimalStr
    bid_size: DecimalStr
    ask_size: DecimalStr
    last_price: DecimalStr
    timestamp: datetime


class BarPublic(BaseModel):
    timestamp: datetime
    open: DecimalStr
    high: DecimalStr
    low: DecimalStr
    close: DecimalStr
    volume: DecimalStr


class BarList(BaseModel):
    symbol: str
    timeframe: Timeframe
    bars: list[BarPublic]


# -- service -----------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]


class ComponentStatus(BaseModel):
    status: Literal["up", "down"]
    latency_ms: DecimalStr
    error: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    components: dict[str, ComponentStatus]


class ErrorBody(BaseModel):
    code: ErrorCode
    message: str
    details: dict[str, Any]
    timestamp: str = Field(examples=["2026-01-15T14:32:45Z"])
    request_id: str


class ErrorEnvelope(BaseModel):
    """Every 4xx/5xx answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "VALIDATION_ERROR",
                        "message": "invalid quantity: must be positive",
                        "details": {"field": "quantity", "reason": "must be positive"},
                        "timestamp": "2024-01-15T14:32:45Z",
                        "request_id": "req-123abc",
                    }
                }
            ]
        }
    )

    error: ErrorBody
