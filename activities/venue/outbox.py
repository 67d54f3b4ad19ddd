"""The paper venue's durable outbox: trade updates committed with their change, sent as signals.

The venue writes a `venue_outbox` row in the same transaction as the change it reports
(`enqueue`), so an event exists exactly when its change committed. `OutboxRelay` turns
undelivered rows into `broker_event` signals on `order-{client_order_id}` and stamps them
delivered. Delivery is at least once: a relay that dies after signalling but before its
commit sends the rows again, and the order workflow de-duplicates fills by execution id.

Payload values are strings (decimals as `str(Decimal)`, instants as ISO 8601), so an amount
comes back as exactly the Decimal that was written, whatever JSON codec a connection has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from contextlib import suppress
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.store import ledger
from contracts.payloads import BrokerEvent, BrokerEventType
from contracts.ports import Deliver

log = logging.getLogger(__name__)

Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]"

# The venue NOTIFYs this channel in the transaction that writes an event; PostgreSQL sends it
# at commit, so a listening relay wakes exactly when there is something new to read.
CHANNEL = "venue_outbox"
MAX_BACKOFF_SECONDS = 5.0

_ENQUEUE = """
WITH written AS (
    INSERT INTO venue_outbox (client_order_id, event, payload)
    VALUES ($1, $2, $3)
    RETURNING id
)
SELECT pg_notify($4, ''), (SELECT id FROM written)
"""


def payload(**fields: object) -> dict[str, str]:
    """An event payload: every value as a string, None left out."""
    return {
        name: value.isoformat() if isinstance(value, datetime) else str(value)
        for name, value in fields.items()
        if value is not None
    }


async def enqueue(
    conn: Connection, client_order_id: str, event: BrokerEventType, fields: Mapping[str, str]
) -> int:
    """Write one event row (and its wake-up NOTIFY) in the caller's transaction; its id.

    Not idempotent by itself, on purpose: call it in the transaction of the change it
    reports, which decides (under the order's row lock) whether there is anything to report,
    so that a repeated change writes no second event. The payload goes as a dict, through
    the pool's JSON codec (activities.store.postgres.init_connection), like all JSON here.
    """
    row = await conn.fetchrow(_ENQUEUE, client_order_id, event.value, dict(fields), CHANNEL)
    assert row is not None
    return int(row[1])


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def event_from_row(row: asyncpg.Record) -> BrokerEvent:
    """The BrokerEvent a `venue_outbox` row stands for (row: client_order_id, event,
    payload as a JSON object, created_at)."""
    data = row["payload"]
    timestamp = data.get("timestamp")
    return BrokerEvent(
        event=BrokerEventType(row["event"]),
        client_order_id=row["client_order_id"],
        timestamp=datetime.fromisoformat(timestamp) if timestamp else row["created_at"],
        broker_order_id=data.get("broker_order_id"),
        execution_id=data.get("execution_id"),
        quantity=_decimal(data.get("quantity")),
        price=_decimal(data.get("price")),
        commission=Decimal(data.get("commission", 0)),
        cumulative_quantity=_decimal(data.get("cumulative_quantity")),
        reason=data.get("reason"),
    )


def workflow_id_for_client_order(client_order_id: str) -> str:
    return f"order-{client_order_id}"


def temporal_deliver(client: Client, pool: asyncpg.Pool) -> Deliver:
    """A deliver function that signals `broker_event` on the order's workflow.

    The client must use the pydantic data converter (the event carries Decimals). A workflow
    that is closed (or never existed: an order placed outside our workflows) cannot take
    the event, and the event is not dropped: `ledger.book_late_event` keeps it, flagged for
    operators, and applies a fill to the ledger once by execution id; then it counts as
    delivered. Any other error is raised, so the row stays undelivered and is sent again on
    a later pass (as is an event whose booking fails). Sending an event twice is harmless:
    the workflow ignores a fill whose execution id it has applied, and a status it has.
    """

    async def deliver(workflow_id: str, event: BrokerEvent) -> None:
        try:
            await client.get_workflow_handle(workflow_id).signal("broker_event", event)
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
            await ledger.book_late_event(pool, event.client_order_id, event)

    return deliver


class OutboxRelay:
    """Delivers the venue's undelivered events, oldest first, and stamps them delivered."""

    def __init__(self, pool: asyncpg.Pool, deliver: Deliver, batch_size: int = 100) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.pool = pool
        self.deliver = deliver
        self.batch_size = batch_size
        self.stalled = False  # the last pass stopped at a delivery that failed

    async def relay_once(self) -> int:
        """Deliver one batch of undelivered events in id order; the number delivered.

        Harmless to run twice or in several processes at once: rows are taken with
        FOR UPDATE SKIP LOCKED, so two relays never hold the same row, and a row is stamped
        delivered in the transaction that locked it, so a later pass skips it. A row is only
        delivered when every earlier undelivered row of its order is in this batch, so a
        later event never overtakes an earlier one held by another relay. If `deliver`
        raises, the batch stops there and the rest stays undelivered for the next pass.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                SELECT id, client_order_id, event, payload, created_at
                FROM venue_outbox
                WHERE delivered_at IS NULL
                ORDER BY id
                LIMIT $1
                FOR UPDATE SKIP LOCKED
                """,
                self.batch_size,
            )
            if not rows:
                return 0
            deliverable = await self._in_order(conn, rows)
            delivered: list[int] = []
            self.stalled = False
            for row in rows:
                if row["id"] not in deliverable:
                    continue
                event = event_from_row(row)
                try:
                    await self.deliver(workflow_id_for_client_order(row["client_order_id"]), event)
                except Exception:
                    # Stop here: the next pass starts again from this row, so the events
                    # after it (of this order, and of any other) keep their order.
                    log.exception("delivering venue event %s failed; retrying later", row["id"])
                    self.stalled = True
                    break
                delivered.append(row["id"])
            if delivered:
                await conn.execute(
                    "UPDATE venue_outbox SET delivered_at = now() WHERE id = ANY($1::bigint[])",
                    delivered,
                )
            return len(delivered)

    @staticmethod
    async def _in_order(conn: Connection, rows: list[asyncpg.Record]) -> set[int]:
        """The ids of `rows` not preceded by an undelivered row of their order that another
        relay holds (every event of one order commits in id order: its writers hold the
        order's row lock)."""
        mine = {row["id"] for row in rows}
        pending = await conn.fetch(
            """
            SELECT id, client_order_id FROM venue_outbox
            WHERE delivered_at IS NULL AND client_order_id = ANY($1::text[]) AND id <= $2
            ORDER BY id
            """,
            list({row["client_order_id"] for row in rows}),
            max(mine),
        )
        blocked: set[str] = set()
        deliverable: set[int] = set()
        for row in pending:
            if row["client_order_id"] in blocked:
                continue
            if row["id"] in mine:
                deliverable.add(row["id"])
            else:
                blocked.add(row["client_order_id"])
        return deliverable

    async def run(self, stop: asyncio.Event, interval_ms: int = 50) -> None:
        """Relay until `stop` is set: woken by the venue's NOTIFY, polling every `interval_ms`
        as the fallback (a lost notification, or no listening connection).

        Harmless next to other relays (see `relay_once`). Database and delivery errors are
        logged and retried with a growing pause; nothing is lost, the rows stay undelivered.
        """
        interval = interval_ms / 1000
        wake = asyncio.Event()

        def notified(*_: object) -> None:
            wake.set()

        listener: PoolConnectionProxy[asyncpg.Record] | None = None
        failures = 0
        try:
            while not stop.is_set():
                if listener is not None and _listener_lost(listener):
                    await self._unlisten(listener, notified)
                    listener = None
                if listener is None:
                    listener = await self._listen(notified)
                wake.clear()  # a NOTIFY during the pass below must wake the next wait
                try:
                    delivered = await self.relay_once()
                except Exception:
                    log.exception("outbox relay pass failed")
                    delivered, self.stalled = 0, True
                if self.stalled:
                    # The database or the deliverer is failing: back off instead of
                    # hammering it (and the log) every interval.
                    failures += 1
                    await _wait_any(
                        [stop], min(interval * 2 ** min(failures, 16), MAX_BACKOFF_SECONDS)
                    )
                    continue
                failures = 0
                if delivered < self.batch_size:
                    await _wait_any([stop, wake], interval)
        finally:
            if listener is not None:
                await self._unlisten(listener, notified)

    async def _listen(
        self, callback: Callable[..., None]
    ) -> PoolConnectionProxy[asyncpg.Record] | None:
        """A pool connection LISTENing on the outbox channel, or None (then we poll)."""
        try:
            conn = await self.pool.acquire(timeout=5)  # a busy pool must not stall relaying
        except Exception:
            log.warning("outbox relay cannot LISTEN; polling", exc_info=True)
            return None
        try:
            await conn.add_listener(CHANNEL, callback)
        except Exception:
            log.warning("outbox relay cannot LISTEN; polling", exc_info=True)
            await self.pool.release(conn)
            return None
        return conn

    async def _unlisten(
        self, conn: PoolConnectionProxy[asyncpg.Record], callback: Callable[..., None]
    ) -> None:
        with suppress(Exception):
            await conn.remove_listener(CHANNEL, callback)
        try:
            await self.pool.release(conn)  # the pool's reset also UNLISTENs
        except Exception:
            log.warning("releasing the outbox listener connection failed", exc_info=True)


def _listener_lost(conn: PoolConnectionProxy[asyncpg.Record]) -> bool:
    """Whether the LISTEN connection is gone. After the server ends it (a PostgreSQL
    restart) asyncpg may already have taken it back into the pool, and then even asking
    raises InterfaceError: that too means it is gone. Raising here once killed the relay
    for good, silently, until every worker restarted."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


async def _wait_any(events: list[asyncio.Event], timeout: float) -> None:
    """Until one of `events` is set or `timeout` seconds pass."""
    if any(event.is_set() for event in events):
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
