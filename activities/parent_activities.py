"""Temporal activities of parent orders (execution algorithms, workflows/parent.py): place
one slice as a child order, sum the children's fills onto the parent, and read the volume
profile VWAP weights its slices by. Each docstring says why running it twice is harmless.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.calendar.sessions import MarketSessions
from activities.store import ledger
from activities.store.ledger import MarketContext
from activities.store.repositories import UnitOfWork, order_snapshot_from_row
from contracts.names import ActivityName, ErrorType
from contracts.payloads import (
    OrderSnapshot,
    ParentProgressInput,
    PlaceChildInput,
    VolumeProfileInput,
    entry_client_order_id,
)
from contracts.ports import MarketData
from domain.commissions import CommissionModel
from domain.errors import ValidationError
from domain.market import SymbolNotFoundError, Timeframe
from domain.orders import OrderClass, OrderSide, OrderStatus, TimeInForce
from domain.values import round_cents

ZERO = Decimal(0)
MAX_PROFILE_BARS = 500


class ParentActivities:
    """The activities of ParentOrderWorkflow, bound to the resources they use."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        market_data: MarketData,
        sessions: MarketSessions,
        commission_model: CommissionModel,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.pool = pool
        self.market_data = market_data
        self.sessions = sessions
        self.commission_model = commission_model
        self.clock = clock

    @activity.defn(name=ActivityName.PLACE_CHILD_ORDER)
    async def place_child_order(self, input: PlaceChildInput) -> OrderSnapshot:
        """One slice: the parent gives up the slice's share of its reservation and the
        child goes through risk (accepted with its own reservation, or rejected), in one
        transaction under the portfolio lock, so the structure never holds more than the
        parent reserved at acceptance plus what risk approves now.

        Idempotent: the child's id is derived from the parent and the slice number and is
        the orders table's primary key; a second run finds the child and returns it,
        changing nothing. A parent that closed meanwhile gets its child stored as rejected.
        """
        child = input.child
        now = self.clock()
        async with UnitOfWork(self.pool) as uow:
            existing = await uow.orders.find(child.order_id)
            if existing is not None:
                return existing
            portfolio = await uow.portfolios.get(child.portfolio_id, for_update=True)
            existing = await uow.orders.find(child.order_id)
            if existing is not None:
                return existing
            parent = await uow.orders.get(input.parent_order_id, for_update=True)
            held = portfolio.reservations.get(parent.id)
            if held is not None:
                unsent = max(ZERO, held.quantity - child.quantity)
                if unsent == 0:
                    portfolio.release(parent.id)
                else:
                    held.amount = round_cents(held.amount * unsent / held.quantity)
                    held.quantity = unsent
            order = ledger.order_from_request(child, now)
            expires_at = None
            if parent.status.is_terminal:
                order.reject(f"parent order is {parent.status.value}", "VALIDATION_ERROR", at=now)
            else:
                ledger.decide(portfolio, order, self._market(input, now))
                if order.time_in_force is TimeInForce.DAY and order.status.is_open:
                    expires_at = self.sessions.next_close(now)
            try:
                snapshot = await uow.orders.add(order, expires_at)
            except ValidationError as err:
                raise ApplicationError(
                    str(err), type=ErrorType.VALIDATION_ERROR, non_retryable=True
                ) from err
            await uow.portfolios.sync_reservation(portfolio, parent.id)
            await uow.portfolios.sync_reservation(portfolio, order.id)
            await uow.commit()
            return snapshot

    def _market(self, input: PlaceChildInput, now: datetime) -> MarketContext:
        child = input.child
        price = input.ask if child.side is OrderSide.BUY else input.bid
        reference = child.limit_price or price
        return MarketContext(
            bid=input.bid,
            ask=input.ask,
            commission=self.commission_model.commission(
                child.side.value, child.quantity, reference
            ).amount,
            market_open=self.sessions.is_open(now),
            expires_at=self.sessions.next_close(now),
        )

    @activity.defn(name=ActivityName.SYNC_PARENT_ORDER)
    async def sync_parent_order(self, input: ParentProgressInput) -> OrderSnapshot:
        """Write the children's summed fills (quantity, exact notional, average) on the
        parent's row and move it to partially_filled; with `final`, close it (filled when
        every share filled, else `final`) and release what it still reserves. The parent's
        row carries no executions and no commission: those stay on the children, so
        nothing is counted twice.

        Idempotent: the sums are recomputed from the children each time, and a closed
        parent is returned unchanged.
        """
        return await sync_parent_row(
            self.pool, self.clock(), input.parent_order_id, input.final, input.reason
        )

    @activity.defn(name=ActivityName.VOLUME_PROFILE)
    async def volume_profile(self, input: VolumeProfileInput) -> list[Decimal]:
        """VWAP's weights: the volume of the most recent bars, grouped into `slices`
        consecutive buckets (oldest first), one bucket per slice; all zero when there are
        no bars (the workflow then slices equally). Read-only."""
        timeframe, count = _profile_bars(input.slices)
        try:
            bars = await self.market_data.get_bars(input.symbol, timeframe, count)
        except SymbolNotFoundError as err:
            raise ApplicationError(
                str(err), type=ErrorType.SYMBOL_NOT_FOUND, non_retryable=True
            ) from err
        volumes = [bar.volume for bar in sorted(bars, key=lambda bar: bar.start)]
        weights = [ZERO] * input.slices
        if not volumes:
            return weights
        for i, volume in enumerate(volumes):
            weights[i * input.slices // len(volumes)] += volume
        return weights

    def all(self) -> list[Callable[..., object]]:
        return [self.place_child_order, self.sync_parent_order, self.volume_profile]


async def sync_parent_row(
    pool: asyncpg.Pool,
    now: datetime,
    parent_order_id: UUID,
    final: OrderStatus | None,
    reason: str | None,
    *,
    skip_unchanged: bool = False,
) -> OrderSnapshot:
    """The parent's row from its children's summed fills (a bracket's or an OTO's from its
    entry alone: its legs close the position; every child's otherwise: a TWAP's or VWAP's
    slices, an OCO's legs, of which at most one fills per share): quantity (at most the
    parent's), exact notional,
    partially_filled once something filled; with `final`, closed (filled when every share
    filled, else `final`, with `reason`) and what it still reserves released. A closed
    parent is returned unchanged; with `skip_unchanged`, so is one whose filled quantity
    did not move (and no `final`). Shared by TWAP/VWAP parents and brackets/OCO/OTO."""
    async with UnitOfWork(pool) as uow:
        head = await uow.orders.get_row(parent_order_id)
        portfolio = await uow.portfolios.get(
            head["portfolio_id"],
            for_update=True,
            symbols=[],
            reservations_for=[parent_order_id],
        )
        parent = await uow.orders.get(parent_order_id, for_update=True)
        if parent.status.is_terminal:
            return order_snapshot_from_row(await uow.orders.get_row(parent.id))
        entry_only = parent.order_class in (OrderClass.BRACKET, OrderClass.OTO)
        sums = await uow.conn.fetchrow(
            """
            SELECT coalesce(sum(filled_quantity), 0) AS quantity,
                   coalesce(sum(filled_notional), 0) AS notional
            FROM orders
            WHERE parent_order_id = $1 AND ($2::text IS NULL OR client_order_id = $2)
            """,
            parent.id,
            entry_client_order_id(parent.id) if entry_only else None,
        )
        assert sums is not None  # an aggregate always answers one row
        filled = min(sums["quantity"], parent.quantity)
        if skip_unchanged and filled == parent.filled_quantity and final is None:
            return order_snapshot_from_row(head)
        parent.filled_quantity = filled
        parent.filled_notional = sums["notional"] if filled else ZERO
        target = parent.status
        if final is not None:
            target = OrderStatus.FILLED if filled == parent.quantity else final
        elif filled:
            target = OrderStatus.PARTIALLY_FILLED
        if target is not parent.status:
            parent.transition_to(target, now)
        parent.updated_at = now
        if target is OrderStatus.FILLED:
            parent.filled_at = now
        if final is not None and reason and target is not OrderStatus.FILLED:
            parent.reject_reason = reason
        if target.is_terminal:
            portfolio.release(parent.id)
        snapshot = await uow.orders.save(parent)
        await uow.portfolios.sync_reservation(portfolio, parent.id)
        await uow.commit()
        return snapshot


def _profile_bars(slices: int) -> tuple[Timeframe, int]:
    """Minute bars, a few per slice, at most MAX_PROFILE_BARS."""
    per_slice = max(1, MAX_PROFILE_BARS // slices)
    return Timeframe.MINUTE_1, min(MAX_PROFILE_BARS, math.ceil(slices * min(per_slice, 5)))
