"""The paper venue's matching rules: pure functions of an order, a quote and the clock.

Matching rules (one pass, `match_once`, at the venue clock's `now`):

* An order works once its latency has passed (`created_at + latency <= now`) and only while
  the session is open (`sessions.is_open(now)`; always in always-open mode).
* Liquidity: an order takes at most the displayed size of the far side of one quote, and
  each quote once. Quotes are bucketed by `quote_refresh` (1 s): the simulated feed redraws
  its sizes every second, and a scripted quote keeps its timestamp until it is replaced. The
  bucket an order last traded against is kept on its row (`last_quote_at`), so a larger
  order fills partially across quote updates and never twice on the same quote. Displayed
  size is shared: orders on the same side of the same quote bucket take from one displayed
  size, in time priority, so the venue never fills more than the quote showed.
* Market orders (and triggered stops) fill at the far touch (ask for a buy, bid for a sell)
  plus slippage `slippage_bps x (fill quantity / displayed size)` of the touch, rounded to
  the nearest tick, a half tick against the taker (up for a buy, down for a sell); quotes
  are on the tick grid, so a fill is never better than the touch.
* Limit orders (and triggered stop-limits) fill when marketable (buy: ask <= limit; sell:
  bid >= limit) at the touch, which is at or better than the limit; no slippage: the limit
  is the price its owner chose, and the fill is capped at the displayed size anyway.
* Stop and stop-limit orders trigger when the last traded price crosses the stop (buy:
  last >= stop; sell: last <= stop); the trigger is kept on the row (`triggered`), so a
  triggered stop-limit keeps resting as a limit when the price comes back.
* Trailing stops keep a mark, the best last trade since they started working (the highest
  for a sell, the lowest for a buy), on the row (`mark`), written with the order's other
  changes; the stop stands `trail_price` (or `trail_percent` of the mark) behind it, on the
  tick grid toward the mark, and triggers like a stop on the last trade, then fills as a
  market order. A restarted venue resumes from the stored mark, never from the price of
  the moment.
* IOC and FOK orders get exactly one pass, their first after the latency: IOC fills what is
  available then and cancels the rest; FOK fills completely then or is canceled with
  nothing filled. An untriggered stop, an unmarketable limit, a closed market or a missing
  quote at that pass cancel them likewise.
* DAY orders carry `expires_at = sessions.next_close(submitted at)`; a pass at or after it
  expires the order (expiry is checked before matching, and also while the market is closed).
* Commission with the model's minimum and caps applied per order, as brokers charge them:
  each execution pays the order's commission so far less what its earlier executions paid
  (`domain.commissions.execution_commission`; no monthly volume: the venue has no notion
  of an account).
* Deterministic: broker order ids are derived from the client order id (uuid5), execution
  ids are `{broker_order_id}-{n}`, prices come from the feed and the clock only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal, localcontext
from typing import Any, Protocol

from contracts.payloads import BrokerEventType
from domain.market import Quote
from domain.orders import OrderSide, OrderType, TimeInForce, trailing_stop_price
from domain.values import tick_size_for


class Row(Protocol):
    """A database row read by column name (asyncpg.Record, or a dict in tests)."""

    def __getitem__(self, key: str, /) -> Any: ...


_BPS = Decimal(10_000)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Fixed, so that a caller who changed the thread's decimal context cannot move a fill price.
_CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class VenueOrder:
    """One row of `venue_orders`, as the matching rules read it."""

    client_order_id: str
    broker_order_id: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    status: str
    filled_quantity: Decimal
    filled_notional: Decimal
    triggered: bool
    created_at: datetime
    expires_at: datetime | None
    last_quote_at: datetime | None
    reason: str | None
    fills: int  # executions so far: the next execution id is `{broker_order_id}-{fills + 1}`
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    mark: Decimal | None = None  # a trailing stop's best price seen (high for a sell)
    oco_group: str | None = None  # exit legs of which a pass fills at most one

    @classmethod
    def from_row(cls, row: Row) -> VenueOrder:
        return cls(
            client_order_id=row["client_order_id"],
            broker_order_id=row["broker_order_id"],
            symbol=row["symbol"],
            side=OrderSide(row["side"]),
            order_type=OrderType(row["order_type"]),
            time_in_force=TimeInForce(row["time_in_force"]),
            quantity=row["quantity"],
            limit_price=row["limit_price"],
            stop_price=row["stop_price"],
            status=row["status"],
            filled_quantity=row["filled_quantity"],
            filled_notional=row["filled_notional"],
            triggered=row["triggered"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            last_quote_at=row["last_quote_at"],
            reason=row["reason"],
            fills=row["fills"],
            trail_price=_column(row, "trail_price"),
            trail_percent=_column(row, "trail_percent"),
            mark=_column(row, "mark"),
            oco_group=_column(row, "oco_group"),
        )

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled_quantity

    @property
    def one_pass(self) -> bool:
        """IOC and FOK orders are decided at their first pass."""
        return self.time_in_force in (TimeInForce.IOC, TimeInForce.FOK)


@dataclass(frozen=True)
class Match:
    """What one pass does to one order: trigger it, fill some of it, and/or close it."""

    triggered: bool
    quantity: Decimal = Decimal(0)
    price: Decimal | None = None
    quote_at: datetime | None = None  # the quote bucket the fill consumed
    close: BrokerEventType | None = None  # CANCELED or EXPIRED
    reason: str | None = None
    mark: Decimal | None = None  # a trailing stop's mark after this pass

    def changes(self, order: VenueOrder) -> bool:
        return (
            self.triggered != order.triggered
            or self.quantity > 0
            or self.close is not None
            or self.mark != order.mark
        )


def _column(row: Row, name: str) -> Any:
    """A column added by a later migration; None for a row (a test's dict) without it."""
    try:
        return row[name]
    except KeyError:
        return None


def trail(order: VenueOrder, last: Decimal) -> tuple[Decimal, Decimal]:
    """A trailing stop's mark after a trade at `last` (the best price seen since it started
    working: the highest for a sell, the lowest for a buy) and where its stop stands."""
    if order.mark is None:
        mark = last
    elif order.side is OrderSide.SELL:
        mark = max(order.mark, last)
    else:
        mark = min(order.mark, last)
    return mark, trailing_stop_price(order.side, mark, order.trail_price, order.trail_percent)


def quote_bucket(at: datetime, refresh: timedelta) -> datetime:
    """The start of the `refresh`-long window `at` falls in: one unit of displayed size."""
    step = refresh // timedelta(microseconds=1)
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    return _EPOCH + timedelta(microseconds=micros - micros % step)


def stop_hit(order: VenueOrder, last: Decimal) -> bool:
    """A stop triggers when the last trade crosses it: up for a buy, down for a sell."""
    assert order.stop_price is not None
    return last >= order.stop_price if order.side is OrderSide.BUY else last <= order.stop_price


def slipped_price(
    touch: Decimal, side: OrderSide, quantity: Decimal, displayed: Decimal, bps: Decimal
) -> Decimal:
    """The far touch moved against the taker by `bps x quantity / displayed`, to the nearest
    tick (a half tick goes against the taker): an order small against the displayed size
    trades at the touch, a large one walks the book."""
    with localcontext(_CONTEXT):
        slip = touch * bps / _BPS * quantity / displayed
        if side is OrderSide.BUY:
            raw = touch + slip
            return raw.quantize(tick_size_for(raw), rounding=ROUND_HALF_UP)
        raw = touch - slip
        tick = tick_size_for(raw)
        return max(raw.quantize(tick, rounding=ROUND_HALF_DOWN), tick)


def decide(
    order: VenueOrder,
    quote: Quote | None,
    now: datetime,
    market_open: bool,
    refresh: timedelta,
    slippage_bps: Decimal,
) -> Match:
    """The matching rules of the module docstring for one working order: a pure function."""
    if order.expires_at is not None and now >= order.expires_at:
        return Match(
            order.triggered,
            close=BrokerEventType.EXPIRED,
            reason="expired at the close",
            mark=order.mark,
        )
    if not market_open or quote is None:
        if order.one_pass:
            why = "market closed" if not market_open else f"no quote for {order.symbol}"
            return Match(
                order.triggered, close=BrokerEventType.CANCELED, reason=why, mark=order.mark
            )
        return Match(order.triggered, mark=order.mark)
    is_stop = order.order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
    triggered = order.triggered or (is_stop and stop_hit(order, quote.last))
    mark = order.mark
    if order.order_type is OrderType.TRAILING_STOP:
        is_stop = True
        if not order.triggered:
            mark, stop = trail(order, quote.last)
            hit = quote.last >= stop if order.side is OrderSide.BUY else quote.last <= stop
            triggered = hit
    quantity = Decimal(0)
    price: Decimal | None = None
    bucket = quote_bucket(quote.timestamp, refresh)
    if triggered or not is_stop:
        touch = quote.far_touch(order.side)
        limit = order.limit_price
        marketable = limit is None or (
            touch <= limit if order.side is OrderSide.BUY else touch >= limit
        )
        fresh = order.last_quote_at is None or bucket > order.last_quote_at
        displayed = quote.displayed_size(order.side)
        if marketable and fresh and displayed > 0:
            quantity = min(order.remaining, displayed)
            if order.time_in_force is TimeInForce.FOK and quantity < order.remaining:
                quantity = Decimal(0)
        if quantity > 0:
            price = (
                touch
                if limit is not None
                else slipped_price(touch, order.side, quantity, displayed, slippage_bps)
            )
    close: BrokerEventType | None = None
    reason: str | None = None
    if order.one_pass and quantity < order.remaining:
        close = BrokerEventType.CANCELED
        reason = (
            "IOC: unfilled quantity canceled"
            if order.time_in_force is TimeInForce.IOC
            else "FOK: not fillable in full at once"
        )
    return Match(
        triggered=triggered,
        quantity=quantity,
        price=price,
        quote_at=bucket if quantity > 0 else None,
        close=close,
        reason=reason,
        mark=mark,
    )
