"""The paper venue: a simulated broker whose orders, fills and trade updates live in PostgreSQL.

All its state is in `venue_orders`, `venue_executions` and `venue_outbox`, so it survives a
restart and several workers can submit, query and cancel through it at once. One matching
loop (`run`) fills working orders against the market data feed; exactly one runs across
processes, under a session-level advisory lock. Every state change and its trade update
(`venue_outbox`) commit in one transaction, and the outbox relay turns the updates into
workflow signals.

The matching rules themselves are pure functions in `activities/venue/matching.py`;
this module owns the state, the loop and the shared displayed size.

Submits the venue refuses (raises BrokerRejectedError): a symbol the market data does not
know, and DAY, IOC or FOK orders while the session is closed (calendar mode; a GTC order is
accepted and waits for the open). A refusal is recorded as a `rejected` order with its
reason and a `rejected` event, so a retried submit is refused again with the same reason,
as a real broker refuses a reused client order id. Orders the schema refuses (a non-positive
quantity, a limit order without a limit price) are refused without a trace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeAlias
from uuid import UUID, uuid5

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from activities import metrics
from activities.backoff import sleep_until_stopped
from activities.calendar.sessions import MarketSessions
from activities.venue.matching import Match, VenueOrder, decide, quote_bucket
from activities.venue.outbox import CHANNEL, enqueue, payload
from contracts.payloads import (
    BrokerEvent,
    BrokerEventType,
    BrokerOrderState,
    OrderRequest,
    SubmitResult,
)
from contracts.ports import BrokerOrderNotFoundError, BrokerRejectedError, MarketData
from domain.commissions import CommissionModel, execution_commission
from domain.errors import DomainError
from domain.market import Quote, SymbolNotFoundError
from domain.orders import OrderSide, OrderStatus, TimeInForce

log = logging.getLogger(__name__)

Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]"

# "paperven" in ASCII: the session-level advisory lock the one matching loop holds.
VENUE_LOCK_KEY = 0x70_61_70_65_72_76_65_6E
# Broker order ids are a pure function of the client order id: the same order always gets
# the same id, in every process and every test run.
BROKER_ORDER_ID_NAMESPACE = UUID("0b8f6f3e-5c1d-4a47-9d2e-7f3a1c5e9b20")
LOCK_RETRY_TICKS = 10  # a standby tries for the lock every this many ticks
MAX_BACKOFF_SECONDS = 5.0

WORKING = ("new", "partially_filled")
_STATUS = {
    "new": OrderStatus.SUBMITTED,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}

# One round trip for everything a match writes: the execution (when $9, its id, is set), the
# order's new state, and its events in order (the rows `outbox.enqueue` writes, one by one),
# with the relay's wake-up NOTIFY. Data-modifying CTEs all run, in one snapshot.
_APPLY_MATCH = """
WITH execution AS (
    INSERT INTO venue_executions (execution_id, client_order_id, quantity, price, commission,
                                  executed_at, sequence, cumulative_quantity)
    SELECT $9, $1, $10, $11, $12, $8, $13, $3
    WHERE $9::text IS NOT NULL
), changed AS (
    UPDATE venue_orders
    SET status = $2, filled_quantity = $3, filled_notional = $4, triggered = $5,
        last_quote_at = coalesce($6, last_quote_at), reason = coalesce($7, reason),
        updated_at = $8, mark = coalesce($17, mark)
    WHERE client_order_id = $1
), events AS (
    INSERT INTO venue_outbox (client_order_id, event, payload)
    SELECT $1, e.event, e.payload
    FROM unnest($14::text[], $15::jsonb[]) WITH ORDINALITY AS e(event, payload, n)
    ORDER BY e.n
)
SELECT pg_notify($16, '') WHERE cardinality($14::text[]) > 0
"""

_ORDER_COLUMNS = """
    o.client_order_id, o.broker_order_id, o.symbol, o.side, o.order_type, o.time_in_force,
    o.quantity, o.limit_price, o.stop_price, o.status, o.filled_quantity, o.filled_notional,
    o.triggered, o.created_at, o.expires_at, o.last_quote_at, o.reason,
    o.trail_price, o.trail_percent, o.mark, o.oco_group,
    (SELECT count(*) FROM venue_executions e WHERE e.client_order_id = o.client_order_id)
        AS fills,
    (SELECT coalesce(sum(e.commission), 0) FROM venue_executions e
     WHERE e.client_order_id = o.client_order_id) AS commission_paid
"""


def broker_order_id_for(client_order_id: str) -> str:
    return "PV-" + uuid5(BROKER_ORDER_ID_NAMESPACE, client_order_id).hex


def _execution_event(order: VenueOrder, row: asyncpg.Record) -> BrokerEvent:
    cumulative: Decimal = row["cumulative_quantity"]
    return BrokerEvent(
        event=BrokerEventType.FILL
        if cumulative == order.quantity
        else BrokerEventType.PARTIAL_FILL,
        client_order_id=order.client_order_id,
        timestamp=row["executed_at"],
        broker_order_id=order.broker_order_id,
        execution_id=row["execution_id"],
        quantity=row["quantity"],
        price=row["price"],
        commission=row["commission"],
        cumulative_quantity=cumulative,
    )


class PaperVenue:
    """A simulated broker: the `Broker` of the order saga, and the matching loop behind it."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        market_data: MarketData,
        sessions: MarketSessions,
        commission_model: CommissionModel,
        latency_ms: int = 50,
        slippage_bps: Decimal = Decimal("5"),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        quote_refresh: timedelta = timedelta(seconds=1),
    ) -> None:
        if latency_ms < 0:
            raise ValueError(f"latency_ms must not be negative, got {latency_ms}")
        if not isinstance(slippage_bps, Decimal) or slippage_bps < 0:
            raise ValueError(f"slippage_bps must be a non-negative Decimal, got {slippage_bps!r}")
        if quote_refresh <= timedelta(0):
            raise ValueError(f"quote_refresh must be positive, got {quote_refresh}")
        self.pool = pool
        self.market_data = market_data
        self.sessions = sessions
        self.commission_model = commission_model
        self.latency = timedelta(milliseconds=latency_ms)
        self.slippage_bps = slippage_bps
        self.clock = clock
        self.quote_refresh = quote_refresh
        self._lock_conn: PoolConnectionProxy[asyncpg.Record] | None = None
        # Displayed size already taken from each (symbol, side, quote bucket) by our orders,
        # so two orders cannot both take one quote's size. Kept by the matching leader in
        # memory: a failover forgets at most the current bucket's consumption.
        self._taken: dict[tuple[str, OrderSide, datetime], Decimal] = {}

    # -- the broker interface ---------------------------------------------------------------

    async def submit(self, request: OrderRequest) -> SubmitResult:
        """Take an order, or refuse it with BrokerRejectedError; the client order id is the
        order id.

        Harmless to run twice: the order row and its first event are written in one
        transaction with INSERT ... ON CONFLICT (client_order_id) DO NOTHING, so a repeated
        submit (even a concurrent one) finds the first order and returns it with
        `already_existed=True`, writing nothing; a refused order is refused again.
        """
        client_order_id = str(request.order_id)
        async with self.pool.acquire() as conn:
            existing = await self._find(conn, client_order_id)
        if existing is not None:
            return _resubmitted(existing)
        now = self.clock()
        reason = await self._refusal(request, now)
        expires_at = None
        if reason is None and request.time_in_force is TimeInForce.DAY:
            expires_at = self.sessions.next_close(now)
        broker_order_id = broker_order_id_for(client_order_id)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                inserted = await conn.fetchval(
                    """
                    INSERT INTO venue_orders (
                        client_order_id, broker_order_id, symbol, side, order_type,
                        time_in_force, quantity, limit_price, stop_price, status, reason,
                        created_at, updated_at, expires_at, trail_price, trail_percent,
                        oco_group)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14,
                        $15, $16)
                    ON CONFLICT (client_order_id) DO NOTHING
                    RETURNING true
                    """,
                    client_order_id,
                    broker_order_id,
                    request.symbol,
                    request.side.value,
                    request.order_type.value,
                    request.time_in_force.value,
                    request.quantity,
                    request.limit_price,
                    request.stop_price,
                    "new" if reason is None else "rejected",
                    reason,
                    now,
                    expires_at,
                    request.trail_price,
                    request.trail_percent,
                    request.oco_group,
                )
                if inserted:
                    event = BrokerEventType.NEW if reason is None else BrokerEventType.REJECTED
                    fields = payload(broker_order_id=broker_order_id, timestamp=now, reason=reason)
                    await enqueue(conn, client_order_id, event, fields)
                else:
                    existing = await self._find(conn, client_order_id)
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as err:
            raise BrokerRejectedError(f"the venue cannot take this order: {err}") from err
        if existing is not None:  # a concurrent submit of the same order got there first
            return _resubmitted(existing)
        if reason is not None:
            raise BrokerRejectedError(reason)
        return SubmitResult(broker_order_id=broker_order_id, already_existed=False)

    async def get_order(self, client_order_id: str) -> BrokerOrderState:
        """The order's status and every execution so far (read-only)."""
        async with self.pool.acquire() as conn:
            order = await self._find(conn, client_order_id)
            if order is None:
                raise BrokerOrderNotFoundError(f"no venue order {client_order_id!r}")
            return await self._state(conn, order)

    async def cancel(self, client_order_id: str) -> BrokerOrderState:
        """Cancel a working order; the state afterwards.

        Harmless to run twice: under the order's row lock, only a working order (new or
        partially filled) changes; a filled, canceled, expired or rejected one is returned
        as it is, with no second event.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            order = await self._find(conn, client_order_id, for_update=True)
            if order is None:
                raise BrokerOrderNotFoundError(f"no venue order {client_order_id!r}")
            if order.status in WORKING:
                now = self.clock()
                reason = "canceled by request"
                await conn.execute(
                    """
                    UPDATE venue_orders SET status = 'canceled', reason = $2, updated_at = $3
                    WHERE client_order_id = $1
                    """,
                    client_order_id,
                    reason,
                    now,
                )
                fields = payload(
                    broker_order_id=order.broker_order_id,
                    cumulative_quantity=order.filled_quantity,
                    timestamp=now,
                    reason=reason,
                )
                await enqueue(conn, client_order_id, BrokerEventType.CANCELED, fields)
                order = await self._find(conn, client_order_id)
                assert order is not None
            return await self._state(conn, order)

    async def positions(self) -> dict[str, Decimal]:
        """The venue's net position per symbol over every execution, signed (negative when
        short), flat symbols left out; the broker's side of reconciliation. Read-only."""
        rows = await self.pool.fetch(
            """
            SELECT o.symbol,
                   sum(CASE o.side WHEN 'buy' THEN e.quantity ELSE -e.quantity END) AS quantity
            FROM venue_executions e JOIN venue_orders o USING (client_order_id)
            GROUP BY o.symbol
            """
        )
        return {row["symbol"]: row["quantity"] for row in rows if row["quantity"] != 0}

    async def open_orders(self) -> list[BrokerOrderState]:
        """Every working order (new or partially filled), without its executions (ask
        `get_order` for those); the broker's side of reconciliation. Read-only."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"""
                SELECT {_ORDER_COLUMNS} FROM venue_orders o WHERE o.status = ANY($1::text[])
                ORDER BY o.created_at, o.client_order_id
                """,
                list(WORKING),
            )
        return [
            BrokerOrderState(
                client_order_id=order.client_order_id,
                broker_order_id=order.broker_order_id,
                status=_STATUS[order.status],
                filled_quantity=order.filled_quantity,
            )
            for order in map(VenueOrder.from_row, rows)
        ]

    # -- matching ---------------------------------------------------------------------------

    async def match_once(self) -> int:
        """One matching pass over the working orders; the number of events written (fills,
        cancels of IOC/FOK remainders, expiries).

        Harmless to run twice, or concurrently: each order is locked with FOR UPDATE SKIP
        LOCKED and re-read under the lock in its own transaction; a quote bucket an order has
        consumed is recorded with the fill, so a second pass on the same quote fills nothing;
        execution ids are the order's fill sequence numbers, unique in the table.
        """
        now = self.clock()
        market_open = self.sessions.is_open(now)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"""
                SELECT {_ORDER_COLUMNS} FROM venue_orders o
                WHERE o.status = ANY($1::text[])
                  AND (o.created_at <= $2 OR o.expires_at <= $3)
                ORDER BY o.created_at, o.client_order_id
                """,
                list(WORKING),
                now - self.latency,
                now,
            )
            candidates = [VenueOrder.from_row(row) for row in rows]
            quotes = await self._quotes({o.symbol for o in candidates}) if market_open else {}
            events = 0
            self._forget_old_buckets(now)
            for candidate in candidates:
                quote = self._what_is_left(quotes.get(candidate.symbol), candidate.side)
                # A read without the lock first: most resting orders do not change on a pass,
                # and they then cost no transaction at all.
                if not self._decide(candidate, quote, now, market_open).changes(candidate):
                    continue
                try:
                    written, taken = await self._match_order(
                        conn,
                        candidate.client_order_id,
                        quote,
                        now,
                        market_open,
                        candidate.oco_group,
                    )
                except (DomainError, asyncpg.IntegrityConstraintViolationError, asyncpg.DataError):
                    # One order the rules or the schema refuse must not stop the venue.
                    log.exception("matching venue order %s failed", candidate.client_order_id)
                    continue
                events += written
                if taken and quote is not None:
                    key = self._bucket_key(quote, candidate.side)
                    self._taken[key] = self._taken.get(key, Decimal(0)) + taken
            return events

    def _bucket_key(self, quote: Quote, side: OrderSide) -> tuple[str, OrderSide, datetime]:
        return quote.symbol, side, quote_bucket(quote.timestamp, self.quote_refresh)

    def _what_is_left(self, quote: Quote | None, side: OrderSide) -> Quote | None:
        """The quote with the displayed size our earlier orders took from it removed."""
        if quote is None:
            return None
        taken = self._taken.get(self._bucket_key(quote, side), Decimal(0))
        if not taken:
            return quote
        if side is OrderSide.BUY:
            return replace(quote, ask_size=max(Decimal(0), quote.ask_size - taken))
        return replace(quote, bid_size=max(Decimal(0), quote.bid_size - taken))

    def _forget_old_buckets(self, now: datetime) -> None:
        # Quotes older than this are not matched against any more (a feed refreshes far
        # sooner), so what they had left no longer matters.
        horizon = now - max(100 * self.quote_refresh, timedelta(minutes=10))
        for key in [key for key in self._taken if key[2] < horizon]:
            del self._taken[key]

    def _decide(
        self, order: VenueOrder, quote: Quote | None, now: datetime, market_open: bool
    ) -> Match:
        return decide(order, quote, now, market_open, self.quote_refresh, self.slippage_bps)

    async def _quotes(self, symbols: set[str]) -> dict[str, Quote]:
        quotes: dict[str, Quote] = {}
        for symbol in sorted(symbols):
            try:
                quotes[symbol] = await self.market_data.get_quote(symbol)
            except (SymbolNotFoundError, LookupError) as err:
                log.warning("paper venue: no quote for %s: %s", symbol, err)
        return quotes

    async def _match_order(
        self,
        conn: Connection,
        client_order_id: str,
        quote: Quote | None,
        now: datetime,
        market_open: bool,
        group: str | None = None,
    ) -> tuple[int, Decimal]:
        """Re-read one order under its lock and apply its match: the execution, the order's
        new state and the events, in one statement (a pass over many fills is bound by round
        trips); the number of events written and the quantity filled.

        An order of an OCO group is matched with the whole group locked (every member's row,
        in client order id order, so two matchers cannot deadlock), and a fill, even a
        partial one, cancels the group's other working orders in the same transaction: two
        legs marketable in the same pass never both fill. (`group` comes from the read without
        the lock: an order's group is written with it and never changes.)"""
        async with conn.transaction():
            if group is not None:
                await conn.execute(
                    """
                    SELECT 1 FROM venue_orders WHERE oco_group = $1
                    ORDER BY client_order_id FOR UPDATE
                    """,
                    group,
                )
            row = await conn.fetchrow(
                f"""
                SELECT {_ORDER_COLUMNS} FROM venue_orders o
                WHERE o.client_order_id = $1 AND o.status = ANY($2::text[])
                FOR UPDATE OF o SKIP LOCKED
                """,
                client_order_id,
                list(WORKING),
            )
            if row is None:  # being canceled right now, or no longer working
                return 0, Decimal(0)
            order = VenueOrder.from_row(row)
            match = self._decide(order, quote, now, market_open)
            if not match.changes(order):
                return 0, Decimal(0)
            filled = order.filled_quantity
            notional = order.filled_notional
            status = order.status
            events: list[tuple[BrokerEventType, dict[str, str]]] = []
            execution_id: str | None = None
            commission: Decimal | None = None
            if match.quantity > 0:
                assert match.price is not None
                filled += match.quantity
                notional += match.quantity * match.price
                status = "filled" if filled == order.quantity else "partially_filled"
                execution_id = f"{order.broker_order_id}-{order.fills + 1}"
                # The minimum and caps apply per order, as at a broker (and as reserved).
                commission = execution_commission(
                    self.commission_model,
                    order.side.value,
                    filled,
                    notional,
                    row["commission_paid"],
                )
                kind = BrokerEventType.FILL if status == "filled" else BrokerEventType.PARTIAL_FILL
                fields = payload(
                    broker_order_id=order.broker_order_id,
                    execution_id=execution_id,
                    quantity=match.quantity,
                    price=match.price,
                    commission=commission,
                    cumulative_quantity=filled,
                    timestamp=now,
                )
                events.append((kind, fields))
            if match.close is not None:
                status = match.close.value
                fields = payload(
                    broker_order_id=order.broker_order_id,
                    cumulative_quantity=filled,
                    timestamp=now,
                    reason=match.reason,
                )
                events.append((match.close, fields))
            await conn.execute(
                _APPLY_MATCH,
                order.client_order_id,
                status,
                filled,
                notional,
                match.triggered,
                match.quote_at,
                match.reason,
                now,
                execution_id,
                match.quantity,
                match.price,
                commission,
                order.fills + 1,
                [event.value for event, _ in events],
                [fields for _, fields in events],
                CHANNEL,
                match.mark,
            )
            written = len(events)
            if group is not None and match.quantity > 0:
                written += await self._cancel_group(conn, group, client_order_id, now)
            return written, match.quantity

    async def _cancel_group(self, conn: Connection, group: str, filled: str, now: datetime) -> int:
        """Cancel the working orders of `filled`'s OCO group other than it (the group's rows
        are locked by the caller's transaction); the number of events written."""
        rows = await conn.fetch(
            """
            UPDATE venue_orders SET status = 'canceled', reason = $3, updated_at = $4
            WHERE oco_group = $1 AND client_order_id <> $2 AND status = ANY($5::text[])
            RETURNING client_order_id, broker_order_id, filled_quantity
            """,
            group,
            filled,
            f"one-cancels-other: {filled} filled",
            now,
            list(WORKING),
        )
        for row in rows:
            fields = payload(
                broker_order_id=row["broker_order_id"],
                cumulative_quantity=row["filled_quantity"],
                timestamp=now,
                reason=f"one-cancels-other: {filled} filled",
            )
            await enqueue(conn, row["client_order_id"], BrokerEventType.CANCELED, fields)
        return len(rows)

    # -- the matching loop ------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Whether this venue's `run` holds the matching lock right now."""
        return self._lock_conn is not None

    async def run(self, stop: asyncio.Event, tick_ms: int = 100) -> None:
        """Match every `tick_ms` while holding the venue lock, until `stop` is set.

        Harmless to start in every process: only the holder of the session-level advisory
        lock matches; the others try again every LOCK_RETRY_TICKS ticks, so a standby takes
        over within about a second of the holder's death (its session, and so its lock, end
        with it). Even two matchers at once would be safe (see `match_once`), only wasteful.
        Errors are logged and retried after a growing pause; the lock is given up meanwhile.
        """
        tick = tick_ms / 1000
        failures = 0
        try:
            while not stop.is_set():
                pause = tick
                try:
                    if self._lock_conn is not None and not await self._still_locked():
                        log.warning("paper venue: lost the matching lock")
                        await self._unlock()
                    if self._lock_conn is None and not await self._try_lock():
                        pause = tick * LOCK_RETRY_TICKS
                    if self._lock_conn is not None:
                        with metrics.VENUE_MATCH_SECONDS.time():
                            await self.match_once()
                    failures = 0
                except Exception:
                    failures += 1
                    log.exception("paper venue: matching pass failed (%d in a row)", failures)
                    await self._unlock()
                    pause = min(tick * 2 ** min(failures, 16), MAX_BACKOFF_SECONDS)
                await sleep_until_stopped(stop, pause)
        finally:
            await self._unlock()

    async def _try_lock(self) -> bool:
        conn = await self.pool.acquire()
        try:
            locked = await conn.fetchval("SELECT pg_try_advisory_lock($1)", VENUE_LOCK_KEY)
        except BaseException:
            await self.pool.release(conn)
            raise
        if not locked:
            await self.pool.release(conn)
            return False
        log.info("paper venue: this process now runs the matching loop")
        self._lock_conn = conn
        return True

    async def _still_locked(self) -> bool:
        """The lock lives as long as its session: a live connection still holds it."""
        conn = self._lock_conn
        if conn is None or conn.is_closed():
            return False
        try:
            await conn.fetchval("SELECT 1")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            return False
        return True

    async def _unlock(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        if conn is None:
            return
        try:
            if not conn.is_closed():
                await conn.execute("SELECT pg_advisory_unlock($1)", VENUE_LOCK_KEY)
        except Exception:
            log.warning("paper venue: unlocking failed; the session end releases it", exc_info=True)
        finally:
            try:
                await self.pool.release(conn)  # the pool's reset unlocks all as well
            except Exception:
                log.warning("paper venue: releasing the lock connection failed", exc_info=True)

    # -- reading ----------------------------------------------------------------------------

    async def _find(
        self, conn: Connection, client_order_id: str, for_update: bool = False
    ) -> VenueOrder | None:
        row = await conn.fetchrow(
            f"""
            SELECT {_ORDER_COLUMNS} FROM venue_orders o WHERE o.client_order_id = $1
            {"FOR UPDATE OF o" if for_update else ""}
            """,
            client_order_id,
        )
        return None if row is None else VenueOrder.from_row(row)

    async def _state(self, conn: Connection, order: VenueOrder) -> BrokerOrderState:
        rows = await conn.fetch(
            """
            SELECT execution_id, quantity, price, commission, executed_at, cumulative_quantity
            FROM venue_executions WHERE client_order_id = $1 ORDER BY sequence
            """,
            order.client_order_id,
        )
        return BrokerOrderState(
            client_order_id=order.client_order_id,
            broker_order_id=order.broker_order_id,
            status=_STATUS[order.status],
            filled_quantity=order.filled_quantity,
            executions=[_execution_event(order, row) for row in rows],
            reason=order.reason,
        )

    async def _refusal(self, request: OrderRequest, now: datetime) -> str | None:
        """Why the venue refuses this order, or None when it takes it."""
        try:
            await self.market_data.get_quote(request.symbol)
        except SymbolNotFoundError:
            return f"unknown symbol {request.symbol}"
        except LookupError:
            pass  # a known symbol without a quote yet: the order waits for one
        if request.time_in_force is not TimeInForce.GTC and not self.sessions.is_open(now):
            return f"market closed: a {request.time_in_force.value} order needs an open session"
        return None


def _resubmitted(order: VenueOrder) -> SubmitResult:
    if order.status == "rejected":
        raise BrokerRejectedError(order.reason or "rejected by the venue")
    return SubmitResult(broker_order_id=order.broker_order_id, already_existed=True)
