"""A venue that replays bars: the `Broker` and the `MarketData` of a backtest.

The clock stands at the open of one bar (the cursor). Quotes are that bar's open (or its
close, with `market_fill="close"`), bid = ask = last, so the order saga's risk check sizes
and reserves at the price the order will trade at. Fill convention (the defaults of the
established backtesting libraries):

* a market order fills at once, in full, at the cursor bar's open: the strategy decided on
  the bar before, so this is "the next bar's open";
* limit and stop orders are matched against the cursor bar and then every later bar the
  clock reaches: a limit fills at the limit, or at the open when the bar opens through it;
  a stop triggers when the bar trades through it and fills at the stop, or at the open
  when it gaps through; a stop-limit, once triggered, fills at the better of the trigger
  price and the limit when the bar reaches the limit;
* no volume limit, no slippage, no partial fills; commission from the configured model.

State is in memory: a backtest runs in one process. Every call is idempotent: a submit is
keyed by the broker's client order id (our order id, as every broker adapter uses it),
and a fill is computed once and then only read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from contracts.payloads import (
    BrokerEvent,
    BrokerEventType,
    BrokerOrderState,
    OrderRequest,
    SubmitResult,
    workflow_id_for,
)
from contracts.ports import BrokerOrderNotFoundError, Deliver
from domain.commissions import CommissionModel, execution_commission
from domain.market import Bar, Quote, SymbolNotFoundError, Timeframe
from domain.orders import OrderSide, OrderStatus, OrderType

MarketFill = Literal["open", "close"]
log = logging.getLogger(__name__)


def fill_price(
    order_type: OrderType,
    side: OrderSide,
    bar: Bar,
    limit: Decimal | None,
    stop: Decimal | None,
    market_fill: MarketFill = "open",
) -> Decimal | None:
    """The price `bar` fills an order at, or None when it does not fill (pure)."""
    buy = side is OrderSide.BUY
    if order_type is OrderType.MARKET:
        return bar.open if market_fill == "open" else bar.close
    trigger = bar.open
    if order_type in (OrderType.STOP, OrderType.STOP_LIMIT):
        assert stop is not None
        if buy:
            if bar.high < stop:
                return None
            trigger = max(bar.open, stop)
        else:
            if bar.low > stop:
                return None
            trigger = min(bar.open, stop)
        if order_type is OrderType.STOP:
            return trigger
    assert limit is not None
    if buy:
        if order_type is OrderType.LIMIT and bar.open <= limit:
            return bar.open
        if bar.low > limit:
            return None
        return min(trigger, limit) if order_type is OrderType.STOP_LIMIT else limit
    if order_type is OrderType.LIMIT and bar.open >= limit:
        return bar.open
    if bar.high < limit:
        return None
    return max(trigger, limit) if order_type is OrderType.STOP_LIMIT else limit


@dataclass
class _Order:
    request: OrderRequest
    status: OrderStatus = OrderStatus.SUBMITTED
    executions: list[BrokerEvent] = field(default_factory=list)
    reason: str | None = None

    @property
    def filled(self) -> Decimal:
        return sum((e.quantity or Decimal(0) for e in self.executions), Decimal(0))

    def state(self) -> BrokerOrderState:
        client_id = str(self.request.order_id)
        return BrokerOrderState(
            client_order_id=client_id,
            broker_order_id=f"replay-{client_id}",
            status=self.status,
            filled_quantity=self.filled,
            executions=list(self.executions),
            reason=self.reason,
        )


class BarReplay:
    """Broker and market data over fixed bars of one or more symbols (aligned in time)."""

    def __init__(
        self,
        bars: dict[str, list[Bar]],
        commission: CommissionModel,
        market_fill: MarketFill = "open",
        deliver: Deliver | None = None,
    ) -> None:
        lengths = {len(series) for series in bars.values()}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError("every symbol needs the same, non-zero number of bars")
        self._bars = bars
        self._length = lengths.pop()
        self._commission = commission
        self._market_fill: MarketFill = market_fill
        self._orders: dict[str, _Order] = {}
        self._deliver = deliver
        self.cursor = 0

    # -- the clock ------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._length

    def bars(self, symbol: str) -> list[Bar]:
        try:
            return self._bars[symbol]
        except KeyError:
            raise SymbolNotFoundError(symbol) from None

    def now(self) -> datetime:
        """The time of the cursor bar: what the activities' clocks read in a backtest."""
        return next(iter(self._bars.values()))[self.cursor].start

    async def advance(self, index: int) -> None:
        """Move the clock to the open of bar `index`, matching resting orders against every
        bar it passes. Idempotent: an index at or before the cursor changes nothing."""
        if not 0 <= index < self._length:
            raise ValueError(f"bar {index} is outside 0..{self._length - 1}")
        while self.cursor < index:
            self.cursor += 1
            for order in self._orders.values():
                if order.status is OrderStatus.SUBMITTED:
                    await self._send(order, self._match(order))

    async def _send(self, order: _Order, event: BrokerEvent | None) -> None:
        """Hand a fill to the order's workflow as a `broker_event` signal, as the paper
        venue's outbox relay does live. Best effort: an order that misses it reads the
        fill at its next poll of `get_order`."""
        if event is None or self._deliver is None:
            return
        try:
            await self._deliver(workflow_id_for(order.request.order_id), event)
        except Exception:  # noqa: BLE001 - the poll is the fallback
            log.warning("replay: fill of %s not delivered; the order polls", order.request.order_id)

    def _match(self, order: _Order) -> BrokerEvent | None:
        request = order.request
        bar = self._bars[request.symbol][self.cursor]
        price = fill_price(
            request.order_type,
            request.side,
            bar,
            request.limit_price,
            request.stop_price,
            self._market_fill,
        )
        if price is None:
            return None
        commission = execution_commission(
            self._commission,
            request.side.value,
            request.quantity,
            request.quantity * price,
            Decimal(0),
        )
        event = BrokerEvent(
            event=BrokerEventType.FILL,
            client_order_id=str(request.order_id),
            timestamp=bar.start,
            broker_order_id=f"replay-{request.order_id}",
            execution_id=f"replay-{request.order_id}-1",
            quantity=request.quantity,
            price=price,
            commission=commission,
            cumulative_quantity=request.quantity,
        )
        order.executions.append(event)
        order.status = OrderStatus.FILLED
        return event

    # -- Broker ---------------------------------------------------------------------------

    async def submit(self, request: OrderRequest) -> SubmitResult:
        known = self._orders.get(str(request.order_id))
        if known is not None:
            return SubmitResult(known.state().broker_order_id, already_existed=True)
        self.bars(request.symbol)  # an unknown symbol is refused
        order = _Order(request)
        self._orders[str(request.order_id)] = order
        await self._send(order, self._match(order))
        return SubmitResult(order.state().broker_order_id, already_existed=False)

    async def get_order(self, client_order_id: str) -> BrokerOrderState:
        order = self._orders.get(client_order_id)
        if order is None:
            raise BrokerOrderNotFoundError(f"no order {client_order_id}")
        return order.state()

    async def cancel(self, client_order_id: str) -> BrokerOrderState:
        order = self._orders.get(client_order_id)
        if order is None:
            raise BrokerOrderNotFoundError(f"no order {client_order_id}")
        if order.status is OrderStatus.SUBMITTED:
            order.status = OrderStatus.CANCELED
            order.reason = "canceled"
        return order.state()

    async def positions(self) -> dict[str, Decimal]:
        held: dict[str, Decimal] = {}
        for order in self._orders.values():
            signed = order.filled * order.request.side.sign
            held[order.request.symbol] = held.get(order.request.symbol, Decimal(0)) + signed
        return {symbol: qty for symbol, qty in held.items() if qty != 0}

    async def open_orders(self) -> list[BrokerOrderState]:
        return [o.state() for o in self._orders.values() if o.status is OrderStatus.SUBMITTED]

    # -- MarketData -----------------------------------------------------------------------

    async def get_quote(self, symbol: str) -> Quote:
        bar = self.bars(symbol)[self.cursor]
        price = bar.open if self._market_fill == "open" else bar.close
        size = max(bar.volume, Decimal(1))
        return Quote(symbol, price, price, size, size, price, bar.start)

    async def get_bars(
        self, symbol: str, timeframe: Timeframe, limit: int, end: datetime | None = None
    ) -> list[Bar]:
        """The bars closed before the cursor bar's open (the last `limit` of them)."""
        closed = self.bars(symbol)[: self.cursor]
        return closed[-limit:] if limit > 0 else []

    async def get_price_series(self, symbol: str, days: int) -> list[Decimal]:
        return [bar.close for bar in await self.get_bars(symbol, Timeframe.DAY_1, days)]

    async def ready(self) -> bool:
        return True

    def symbols(self) -> list[str]:
        return sorted(self._bars)
