"""Alpaca's trade_updates websocket stream, turned into `broker_event` signals.

Every trade update becomes a BrokerEvent named exactly as polling names it (see
`alpaca_rest`: one execution id for both paths), so the order workflow applies a fill once
whichever path brings it. After a reconnect every open order is told to re-read its status,
since updates sent while the stream was down are not replayed by Alpaca.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from activities import metrics
from activities.backoff import backoff_delay, sleep_until_stopped
from activities.brokers.alpaca_rest import (
    PAPER_URL,
    AlpacaDataError,
    AlpacaOrder,
    fill_event,
    instant_field,
    mapping_field,
    positive_field,
    stream_url_for,
)
from contracts.payloads import BrokerEvent, BrokerEventType
from contracts.ports import Deliver

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]  # called after every reconnect

# -- the trade_updates stream -----------------------------------------------------------------

_EVENTS: Mapping[str, BrokerEventType] = {
    "new": BrokerEventType.NEW,
    "partial_fill": BrokerEventType.PARTIAL_FILL,
    "fill": BrokerEventType.FILL,
    "pending_cancel": BrokerEventType.PENDING_CANCEL,
    "canceled": BrokerEventType.CANCELED,
    "expired": BrokerEventType.EXPIRED,
    "rejected": BrokerEventType.REJECTED,
}
# Documented events that change nothing the saga tracks; polling sees their effect, if any.
_QUIET_EVENTS = frozenset(
    {
        "accepted",
        "pending_new",
        "accepted_for_bidding",
        "pending_review",
        "held",
        "stopped",
        "suspended",
        "calculated",
        "done_for_day",
        "restated",
        "pending_replace",
        "replaced",
        "order_replace_rejected",
        "order_cancel_rejected",
    }
)
_CORRECTIONS = frozenset({"trade_bust", "trade_correct"})


def trade_update_event(data: Mapping[str, Any]) -> BrokerEvent | None:
    """The BrokerEvent of one trade_updates message's `data`, or None for an event the saga
    does not act on. Raises AlpacaDataError for a malformed update."""
    name = data.get("event")
    if name in _QUIET_EVENTS:
        log.debug("Alpaca trade update %s: nothing to deliver", name)
        return None
    if name in _CORRECTIONS:
        log.error(
            "Alpaca reports %s for order %s: reconcile it by hand",
            name,
            mapping_field(data.get("order"), "order").get("client_order_id"),
        )
        return None
    kind = _EVENTS.get(name) if isinstance(name, str) else None
    if kind is None:
        log.warning("unknown Alpaca trade update event %r ignored", name)
        return None
    where = f"Alpaca {name} update"
    order = AlpacaOrder.parse(data.get("order"))
    at = instant_field(data, "timestamp", where)
    if kind.is_fill:
        quantity = positive_field(data, "qty", where)
        price = positive_field(data, "price", where)
        if quantity > order.filled_quantity:
            raise AlpacaDataError(
                f"{where}: fill of {quantity} but the order has filled {order.filled_quantity}"
            )
        # The execution id comes from the snapshot's filled_qty, so the snapshot must be the
        # order right after this execution. One taken after a later fill, or before this
        # one, would name this execution like another one (applied twice, one missed): where
        # that shows (a partial_fill of a filled order, a fill of an order not filled), the
        # update is refused and the order's next poll reads the executions by cum_qty.
        if (name == "fill") != (order.filled_quantity == order.quantity):
            raise AlpacaDataError(
                f"{where}: the order snapshot (filled {order.filled_quantity} of "
                f"{order.quantity}) is not the order right after this {name}"
            )
        return fill_event(order, order.filled_quantity, quantity, price, at)
    return BrokerEvent(
        event=kind,
        client_order_id=order.client_order_id,
        timestamp=at,
        broker_order_id=order.id,
        # Lets the workflow see that a cancel/expiry follows fills it has not applied yet.
        cumulative_quantity=order.filled_quantity,
        reason=f"{name} at Alpaca" if kind.is_terminal else None,
    )


class AlpacaStreamError(Exception):
    """The trade_updates handshake failed (refused credentials, no trade_updates stream)."""


class AlpacaTradeStream:
    """The trade_updates websocket of one Alpaca account, delivered as broker_event signals.

    Run one per account. Every event goes to `deliver("order-{client_order_id}", event)`,
    the same path the paper venue's outbox takes. Events sent while no connection listens are
    lost (Alpaca does not replay them), so after every successful connect, the first one
    included, `on_reconnect()` runs: the worker has each open order re-read its broker
    status there. A failed delivery or hook drops the connection, so the hook runs again
    after the reconnect and no lost event goes unnoticed. Reconnects back off exponentially
    with jitter; the backoff resets once a connection has stayed up `stable_after` seconds.
    """

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        deliver: Deliver,
        on_reconnect: Hook,
        *,
        url: str = stream_url_for(PAPER_URL),
        backoff_base_seconds: float = 1.0,
        backoff_cap_seconds: float = 30.0,
        stable_after_seconds: float = 30.0,
        handshake_timeout_seconds: float = 10.0,
    ) -> None:
        self.url = url
        self._key = api_key
        self._secret = secret_key
        self._deliver = deliver
        self._on_reconnect = on_reconnect
        self._backoff_base = backoff_base_seconds
        self._backoff_cap = backoff_cap_seconds
        self._stable_after = stable_after_seconds
        self._handshake_timeout = handshake_timeout_seconds
        self.connections = 0  # successful handshakes so far

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until `stop` is set, reconnecting whenever the connection fails."""
        loop = asyncio.get_running_loop()
        failures = 0
        while not stop.is_set():
            listening_since: float | None = None
            try:
                async with connect(
                    self.url,
                    open_timeout=self._handshake_timeout,
                    ping_interval=20,
                    ping_timeout=20,
                    close_timeout=2,
                ) as ws:
                    await self._handshake(ws)
                    listening_since = loop.time()
                    self.connections += 1
                    log.info("listening to Alpaca trade_updates at %s", self.url)
                    await self._on_reconnect()
                    await self._consume(ws, stop)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # any failure of this connection: reconnect
                log.warning("Alpaca trade_updates stream failed (%s); reconnecting", err)
            if stop.is_set():
                return
            metrics.STREAM_RECONNECTS.inc()
            if listening_since is not None and loop.time() - listening_since > self._stable_after:
                failures = 0
            failures += 1
            await sleep_until_stopped(
                stop, backoff_delay(failures, self._backoff_base, self._backoff_cap)
            )

    async def _handshake(self, ws: ClientConnection) -> None:
        async with asyncio.timeout(self._handshake_timeout):
            auth = {"key_id": self._key, "secret_key": self._secret}
            await ws.send(json.dumps({"action": "authenticate", "data": auth}))
            reply = await self._next(ws, "authorization")
            if reply.get("status") != "authorized":
                raise AlpacaStreamError(f"Alpaca refused the stream credentials: {reply}")
            await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
            reply = await self._next(ws, "listening")
            if "trade_updates" not in (reply.get("streams") or []):
                raise AlpacaStreamError(f"Alpaca did not open trade_updates: {reply}")

    async def _next(self, ws: ClientConnection, stream: str) -> Mapping[str, Any]:
        while True:
            message = _decode(await ws.recv())
            if message.get("stream") == stream:
                return mapping_field(message.get("data"), f"Alpaca {stream} message")

    async def _consume(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                receiving = asyncio.ensure_future(ws.recv())
                await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    receiving.cancel()
                    return
                await self._handle(receiving.result())
        finally:
            stopping.cancel()

    async def _handle(self, frame: str | bytes) -> None:
        try:
            message = _decode(frame)
            if message.get("stream") != "trade_updates":
                log.debug("Alpaca stream message ignored: %s", message)
                return
            event = trade_update_event(mapping_field(message.get("data"), "trade update"))
        except AlpacaDataError as err:
            # Not delivered: the order's next poll reads the same fill from the REST API.
            log.error("malformed Alpaca trade update refused: %s", err)
            return
        if event is not None:
            await self._deliver(f"order-{event.client_order_id}", event)


def _decode(frame: str | bytes) -> Mapping[str, Any]:
    """One stream frame (text, or binary as the paper endpoint sends) as a JSON object."""
    try:
        message = json.loads(frame, parse_float=Decimal)
    except ValueError as err:
        raise AlpacaDataError(f"Alpaca stream frame is not JSON: {frame!r:.200}") from err
    return mapping_field(message, "Alpaca stream frame")
