"""Temporal activities of brackets, OCO and OTO orders (workflows/bracket.py): place a group
of exit legs, read the structure's orders, and bring the parent's row up to date. The entry
is placed with ParentActivities.place_child_order (it takes the parent's reservation). Each
docstring says why running it twice is harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.calendar.sessions import MarketSessions
from activities.parent_activities import sync_parent_row
from activities.store import ledger
from activities.store.ledger import MarketContext
from activities.store.repositories import UnitOfWork, order_snapshot_from_row
from contracts.names import ActivityName, ErrorType
from contracts.payloads import (
    BracketProgressInput,
    OrderRequest,
    OrderSnapshot,
    PlaceLegsInput,
    leg_role,
)
from domain.commissions import CommissionModel
from domain.errors import ValidationError
from domain.orders import OrderSide, TimeInForce
from domain.portfolio import Reservation

ZERO = Decimal(0)


class BracketActivities:
    """The activities of BracketWorkflow, bound to the resources they use."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        sessions: MarketSessions,
        commission_model: CommissionModel,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.pool = pool
        self.sessions = sessions
        self.commission_model = commission_model
        self.clock = clock

    @activity.defn(name=ActivityName.PLACE_LEGS)
    async def place_legs(self, input: PlaceLegsInput) -> list[OrderSnapshot]:
        """One group of exit legs through risk, in one transaction under the portfolio lock:
        the parent gives up what it still reserves (an OCO's parent holds the claim on the
        position until its legs exist), then each leg is decided as the position-reducing
        order it is. Legs of different roles (take-profit, stop-loss) claim the same shares,
        of which at most one can fill (the venue's OCO group, the workflow's cancel): so a
        leg is decided without the reservations of the other role's legs, and neither
        counts as opening a position nor reserves more than its commission estimate.

        Idempotent: leg ids are derived from the parent, the role and the group number and
        are the orders table's primary key; a second run finds the legs and returns them,
        changing nothing. A parent that closed meanwhile gets its legs stored as rejected.
        """
        now = self.clock()
        async with UnitOfWork(self.pool) as uow:
            if all([await uow.orders.find(leg.order_id) for leg in input.legs]):
                return await self._found(uow, input.legs)
            first = input.legs[0]
            portfolio = await uow.portfolios.get(first.portfolio_id, for_update=True)
            if all([await uow.orders.find(leg.order_id) for leg in input.legs]):
                return await self._found(uow, input.legs)
            parent = await uow.orders.get(input.parent_order_id, for_update=True)
            portfolio.release(parent.id)
            siblings = await uow.conn.fetch(
                "SELECT id, client_order_id FROM orders WHERE parent_order_id = $1",
                parent.id,
            )
            roles = {row["id"]: leg_role(parent.id, row["client_order_id"]) for row in siblings}
            for leg in input.legs:
                roles[leg.order_id] = leg_role(parent.id, leg.client_order_id)
            snapshots: list[OrderSnapshot] = []
            for leg in input.legs:
                existing = await uow.orders.find(leg.order_id)
                if existing is not None:
                    snapshots.append(existing)
                    continue
                order = ledger.order_from_request(leg, now)
                expires_at = None
                if parent.status.is_terminal:
                    order.reject(
                        f"parent order is {parent.status.value}", "VALIDATION_ERROR", at=now
                    )
                else:
                    mine = roles[leg.order_id]
                    aside: dict[UUID, Reservation] = {
                        order_id: portfolio.reservations.pop(order_id)
                        for order_id, role in roles.items()
                        if role is not None and role != mine and order_id in portfolio.reservations
                    }
                    ledger.decide(portfolio, order, self._market(input, leg, now))
                    portfolio.reservations.update(aside)
                    if order.time_in_force is TimeInForce.DAY and order.status.is_open:
                        expires_at = self.sessions.next_close(now)
                try:
                    snapshots.append(await uow.orders.add(order, expires_at))
                except ValidationError as err:
                    raise ApplicationError(
                        str(err), type=ErrorType.VALIDATION_ERROR, non_retryable=True
                    ) from err
                await uow.portfolios.sync_reservation(portfolio, order.id)
            await uow.portfolios.sync_reservation(portfolio, parent.id)
            await uow.commit()
            return snapshots

    async def _found(self, uow: UnitOfWork, legs: list[OrderRequest]) -> list[OrderSnapshot]:
        found = [await uow.orders.find(leg.order_id) for leg in legs]
        return [snapshot for snapshot in found if snapshot is not None]

    def _market(self, input: PlaceLegsInput, leg: OrderRequest, now: datetime) -> MarketContext:
        price = input.ask if leg.side is OrderSide.BUY else input.bid
        reference = leg.limit_price or leg.stop_price or price
        return MarketContext(
            bid=input.bid,
            ask=input.ask,
            commission=self.commission_model.commission(
                leg.side.value, leg.quantity, reference
            ).amount,
            market_open=self.sessions.is_open(now),
            expires_at=self.sessions.next_close(now),
        )

    @activity.defn(name=ActivityName.BRACKET_CHILDREN)
    async def bracket_children(self, parent_order_id: UUID) -> list[OrderSnapshot]:
        """The parent's entry and legs as stored, in the order they were created. Read-only."""
        async with UnitOfWork(self.pool) as uow:
            rows = await uow.conn.fetch(
                "SELECT * FROM orders WHERE parent_order_id = $1 "
                "ORDER BY created_at, client_order_id",
                parent_order_id,
            )
        return [order_snapshot_from_row(row) for row in rows]

    @activity.defn(name=ActivityName.SYNC_BRACKET)
    async def sync_bracket(self, input: BracketProgressInput) -> OrderSnapshot:
        """Write what the structure filled on the parent's row: its entry's fills (bracket,
        oto) or its legs' (oco; they close the position, at most one per group), exact
        notional and average, with no commission and no executions (those stay on the
        children, so nothing is counted twice); partially_filled once something filled.
        With `final`, close it (filled when every share filled, else `final`) and release
        what it still reserves.

        Idempotent: the sums are recomputed from the children each time, and a closed
        parent is returned unchanged.
        """
        return await sync_parent_row(
            self.pool,
            self.clock(),
            input.parent_order_id,
            input.final,
            input.reason,
            skip_unchanged=True,
        )

    def all(self) -> list[Callable[..., object]]:
        return [self.place_legs, self.bracket_children, self.sync_bracket]
