"""What the activities need of the outside world: one `Broker` and one `MarketData` protocol,
the errors a broker raises, and how a broker's trade updates are delivered.

The paper venue and the Alpaca adapter are both a `Broker`; the simulated feed, Polygon and
the tests' scripted feed are all `MarketData`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from contracts.payloads import BrokerEvent, BrokerOrderState, OrderRequest, SubmitResult
from domain.errors import DomainError
from domain.market import Bar, Quote, Timeframe


class Broker(Protocol):
    """A broker: the order saga submits, reads and cancels through it; reconciliation also
    reads its positions and open orders."""

    async def submit(self, request: OrderRequest) -> SubmitResult: ...
    async def get_order(self, client_order_id: str) -> BrokerOrderState: ...
    async def cancel(self, client_order_id: str) -> BrokerOrderState: ...
    async def positions(self) -> dict[str, Decimal]: ...
    async def open_orders(self) -> list[BrokerOrderState]: ...


class MarketData(Protocol):
    """Any market data source: the simulated feed, Polygon, or a test's scripted feed."""

    async def get_quote(self, symbol: str) -> Quote: ...

    async def get_bars(
        self, symbol: str, timeframe: Timeframe, limit: int, end: datetime | None = None
    ) -> list[Bar]: ...

    async def get_price_series(self, symbol: str, days: int) -> list[Decimal]: ...

    async def ready(self) -> bool: ...

    def symbols(self) -> list[str]: ...


# Hands one trade update to the workflow of the order with that client order id.
Deliver = Callable[[str, BrokerEvent], Awaitable[None]]


class BrokerRejectedError(DomainError):
    """The broker refused the order outright; retrying would be refused again."""


class BrokerOrderNotFoundError(DomainError):
    """The broker does not know this client order id."""
