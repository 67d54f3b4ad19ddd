"""Temporal activities of the order saga: market data, the store, and the broker.

Each activity may run more than once (a retry, a worker crash after the work but before
the completion was recorded); each docstring says why running it twice is harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.calendar.sessions import MarketSessions
from activities.store import ledger
from activities.store.ledger import MarketContext
from contracts.names import ActivityName, ErrorType
from contracts.payloads import (
    AcceptInput,
    ApplyFillInput,
    BrokerOrderState,
    BrokerReachability,
    OrderRequest,
    OrderSnapshot,
    RecordStatusInput,
    SubmitResult,
)
from contracts.ports import Broker, BrokerOrderNotFoundError, BrokerRejectedError, MarketData
from domain.commissions import CommissionModel
from domain.errors import ValidationError
from domain.market import Quote, SymbolNotFoundError
from domain.orders import OrderSide


def _non_retryable(err: Exception, kind: ErrorType) -> ApplicationError:
    return ApplicationError(str(err), type=kind, non_retryable=True)


class OrderActivities:
    """The activities of OrderWorkflow, bound to the resources they use."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        market_data: MarketData,
        broker: Broker,
        sessions: MarketSessions,
        commission_model: CommissionModel,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.pool = pool
        self.market_data = market_data
        self.broker = broker
        self.sessions = sessions
        self.commission_model = commission_model
        self.clock = clock

    @activity.defn(name=ActivityName.GET_QUOTE)
    async def get_quote(self, symbol: str) -> Quote:
        """Read-only: running it twice reads twice."""
        try:
            return await self.market_data.get_quote(symbol)
        except SymbolNotFoundError as err:
            raise _non_retryable(err, ErrorType.SYMBOL_NOT_FOUND) from err

    @activity.defn(name=ActivityName.ACCEPT_ORDER)
    async def accept_order(self, input: AcceptInput) -> OrderSnapshot:
        """Risk check, buying-power reservation and the order row, in one transaction.

        Idempotent: the order id is the orders table's primary key; a second run returns the
        row the first one wrote (see ledger.place_order).
        """
        request = input.request
        now = self.clock()
        rejection = None
        market = None
        if input.rejection_code is not None:
            rejection = (input.rejection_code, input.rejection_reason or input.rejection_code)
        elif input.bid is not None and input.ask is not None:
            price = input.ask if request.side is OrderSide.BUY else input.bid
            reference = request.limit_price or request.stop_price or price
            market = MarketContext(
                bid=input.bid,
                ask=input.ask,
                commission=self.commission_model.commission(
                    request.side.value, request.quantity, reference
                ).amount,
                market_open=self.sessions.is_open(now),
                expires_at=self.sessions.next_close(now),
            )
        try:
            return await ledger.place_order(self.pool, request, now, market, rejection)
        except ValidationError as err:
            raise _non_retryable(err, ErrorType.VALIDATION_ERROR) from err

    @activity.defn(name=ActivityName.APPLY_FILL)
    async def apply_fill(self, input: ApplyFillInput) -> OrderSnapshot:
        """Apply one execution to order, position, cash and reservation in one transaction.

        Idempotent: the execution id is the executions table's primary key; a second run
        finds it and writes nothing (see ledger.apply_fill).
        """
        try:
            fill = ledger.fill_of(input.fill)
            if fill is None:
                raise ValidationError("fill", f"not a fill: {input.fill}")
            return await ledger.apply_fill(self.pool, input.order_id, fill)
        except ValidationError as err:
            raise _non_retryable(err, ErrorType.VALIDATION_ERROR) from err

    @activity.defn(name=ActivityName.RECORD_STATUS)
    async def record_status(self, input: RecordStatusInput) -> OrderSnapshot:
        """Record a non-fill status change; a terminal one releases the reservation.

        Idempotent: a change already made, or no longer possible, is a no-op (see
        ledger.record_status).
        """
        return await ledger.record_status(self.pool, input, self.clock())

    @activity.defn(name=ActivityName.RECORD_BROKER_REACHABILITY)
    async def record_broker_reachability(self, input: BrokerReachability) -> None:
        """Mark the order as waiting for an unreachable broker, or clear the mark.

        Idempotent: it sets one column to the given value; running it twice writes the
        same value twice. Safe as a short store step: no broker call.
        """
        await ledger.record_broker_reachability(self.pool, input.order_id, input.unreachable_since)

    @activity.defn(name=ActivityName.SUBMIT_ORDER)
    async def submit_order(self, request: OrderRequest) -> SubmitResult:
        """Send the order to the broker with our order id as its client order id.

        Idempotent: the broker adapter looks the client order id up before sending, and the
        broker itself refuses a second order with the same client order id.
        """
        try:
            return await self.broker.submit(request)
        except BrokerRejectedError as err:
            raise _non_retryable(err, ErrorType.BROKER_REJECTED) from err

    @activity.defn(name=ActivityName.GET_BROKER_ORDER)
    async def get_broker_order(self, client_order_id: str) -> BrokerOrderState:
        """Read-only at the broker."""
        try:
            return await self.broker.get_order(client_order_id)
        except BrokerOrderNotFoundError as err:
            raise _non_retryable(err, ErrorType.ORDER_NOT_FOUND) from err

    @activity.defn(name=ActivityName.CANCEL_AT_BROKER)
    async def cancel_at_broker(self, client_order_id: str) -> BrokerOrderState:
        """Ask the broker to cancel; returns its state afterwards.

        Idempotent: canceling a canceled (or filled) order changes nothing at the broker;
        the state returned says what the order is.
        """
        try:
            return await self.broker.cancel(client_order_id)
        except BrokerOrderNotFoundError as err:
            raise _non_retryable(err, ErrorType.ORDER_NOT_FOUND) from err

    def all(self) -> list[Callable[..., object]]:
        return [
            self.get_quote,
            self.accept_order,
            self.apply_fill,
            self.record_status,
            self.submit_order,
            self.get_broker_order,
            self.cancel_at_broker,
            self.record_broker_reachability,
        ]
