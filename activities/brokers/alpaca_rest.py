"""Alpaca through alpaca-py: the order saga's `Broker`, and the trade_updates stream as signals.

**One execution id for both paths.** A fill reaches us twice: on the trade_updates stream
and, when the order workflow polls, from the REST API. Alpaca's own `execution_id` exists only
on the stream, so it cannot be the key. Both paths instead name an execution by the order's
*cumulative* filled quantity after it: `execution_id_for(alpaca_order_id, cumulative)` gives
`"{alpaca_order_id}-cum-{cumulative}"`. The stream takes the cumulative quantity from the
order snapshot in the event (`order.filled_qty`); polling takes it from the account's FILL
activities (`cum_qty`), which list every execution of the order with its own quantity and
price. The same fill therefore gets the same id, quantity and price either way, and the
workflow (which de-duplicates by execution id) applies it once.

Polling cannot rebuild the individual executions from the order alone: `filled_qty` and
`filled_avg_price` give one cumulative total, and a synthetic execution for it would collide
with (or double) the executions the stream already delivered. So `get_order` reads the FILL
activities, and if they do not (yet) add up to the order's `filled_qty` it raises an ordinary
error, so that Temporal asks again, rather than guessing. No price is ever derived by
division: every execution price is one Alpaca reported, exactly as it wrote it.

**Exact decimals.** Alpaca writes quantities and prices as JSON strings ("187.23"); they
become Decimal here. alpaca-py's request models type `qty` and prices as float, so orders
are posted with `TradingClient.post` and a body of decimal strings (which Alpaca accepts)
instead of the float models. Should Alpaca ever send a JSON number, requests has already
parsed it to float; it is converted once, through `str`, at this edge.

**Nothing is sent twice by accident.** alpaca-py's RESTClient retries 429 and 504 by itself
(three times, three seconds apart) and sets no timeout at all. Both are switched off (see
`_no_hidden_retries`): every call is sent once, with a timeout. After a timeout, a 5xx or a
429 on a submit, the order is looked up by client order id before anything is sent again,
and a later attempt of the same submit looks it up first as well. Alpaca's 422 "client_order_id
must be unique" means an earlier attempt landed: the order is fetched, not refused.

**Rate limit.** Alpaca allows 200 requests a minute per account. A 429 holds every later
call of this process until the `X-RateLimit-Reset` instant: a call waits for it when it is
near (at most `max_rate_limit_wait_seconds`), and otherwise fails at once without spending a
request, so Temporal's retry comes back later. No call here retries by itself.

**Brackets, OCO and OTO are not sent as Alpaca's `order_class`.** Our legs are ordinary
orders, each with its own client order id and workflow, placed only for the shares the entry
has filled (workflows/bracket.py); Alpaca's bracket creates its legs itself, under ids of its
own, for the whole quantity at once, which neither fits one-workflow-per-order nor
partial-fill sizing. So each leg goes to Alpaca as a plain limit or stop order
(`OrderRequest.oco_group` is not sent), and one-cancels-other is the workflow's: it cancels
the group's other legs when it sees a fill, within one check interval. Unlike on the paper
venue, where a group fills at most one leg per matching pass, two legs that Alpaca fills
within that interval both fill; the position can then be over-closed by one leg.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import requests
from alpaca.common.exceptions import APIError
from requests.adapters import HTTPAdapter
from temporalio import activity

from contracts.payloads import (
    BrokerEvent,
    BrokerEventType,
    BrokerOrderState,
    OrderRequest,
    SubmitResult,
)
from contracts.ports import BrokerOrderNotFoundError, BrokerRejectedError
from domain.orders import OrderStatus, OrderType
from domain.values import decimal_text

if TYPE_CHECKING:  # imported where a broker is built: alpaca.trading imports pandas
    from alpaca.trading.client import TradingClient

log = logging.getLogger(__name__)

PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"


_FILL_PAGE_SIZE = 100  # Alpaca's maximum for account activities
_FILL_MAX_PAGES = 50  # per call: a longer history resumes where the last call stopped
_FILL_CACHE_SIZE = 1024
_OPEN_ORDERS_PAGE_SIZE = 500  # Alpaca's maximum for GET /v2/orders
_OPEN_ORDERS_MAX_PAGES = 20
_DUPLICATE = "client_order_id must be unique"


_FillRow = tuple[Decimal, Decimal, Decimal, datetime]  # cumulative, quantity, price, time


class AlpacaError(Exception):
    """Alpaca could not answer usefully this time; Temporal retries the activity."""


class AlpacaRateLimitedError(AlpacaError):
    """Over Alpaca's request budget until the reset instant of its last 429."""


class AlpacaDataError(AlpacaError):
    """Alpaca answered something that cannot be taken as valid (missing or malformed fields)."""


# -- the execution id scheme and small parsers ------------------------------------------------


def execution_id_for(broker_order_id: str, cumulative: Decimal) -> str:
    """The id of the execution that brought the order's filled quantity to `cumulative`.

    Used by the stream and by polling alike (see the module docstring), so the same fill has
    the same id whichever path brings it.
    """
    return f"{broker_order_id}-cum-{decimal_text(cumulative)}"


def _decimal(raw: Mapping[str, Any], field: str, where: str) -> Decimal | None:
    value = raw.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise AlpacaDataError(f"{where}: {field} is not a number: {value!r}")
    try:
        # A float only if Alpaca sent a JSON number: str() gives its shortest exact repr.
        result = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise AlpacaDataError(f"{where}: {field} is not a number: {value!r}") from None
    if not result.is_finite():
        raise AlpacaDataError(f"{where}: {field} is not finite: {value!r}")
    return result


def _required(raw: Mapping[str, Any], field: str, where: str) -> Decimal:
    value = _decimal(raw, field, where)
    if value is None:
        raise AlpacaDataError(f"{where}: {field} is missing")
    return value


def positive_field(raw: Mapping[str, Any], field: str, where: str) -> Decimal:
    value = _required(raw, field, where)
    if value <= 0:
        raise AlpacaDataError(f"{where}: {field} must be positive, got {value}")
    return value


def _text(raw: Mapping[str, Any], field: str, where: str) -> str:
    value = raw.get(field)
    if not isinstance(value, str) or not value:
        raise AlpacaDataError(f"{where}: {field} is missing or not a string: {value!r}")
    return value


def instant_field(raw: Mapping[str, Any], field: str, where: str) -> datetime:
    value = _text(raw, field, where)
    try:
        # RFC 3339 with up to nanoseconds; Python 3.11 reads it (keeping microseconds).
        result = datetime.fromisoformat(value)
    except ValueError:
        raise AlpacaDataError(f"{where}: {field} is not a timestamp: {value!r}") from None
    if result.tzinfo is None:
        raise AlpacaDataError(f"{where}: {field} has no time zone: {value!r}")
    return result


def mapping_field(raw: object, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise AlpacaDataError(f"{where}: expected a JSON object, got {raw!r:.200}")
    return raw


# Alpaca's order statuses in ours. Working statuses (the order is live at Alpaca) read as
# submitted or partially filled by the filled quantity; `None` marks them.
_STATUSES: Mapping[str, OrderStatus | None] = {
    "new": None,
    "accepted": None,
    "pending_new": None,
    "accepted_for_bidding": None,
    "pending_review": None,
    "held": None,
    "stopped": None,
    "suspended": None,
    "calculated": None,
    "done_for_day": None,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "pending_cancel": OrderStatus.PENDING_CANCEL,
    "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}
# This system never replaces orders; a replaced one was changed behind its back.
_REPLACED = frozenset({"replaced", "pending_replace"})


@dataclass(frozen=True)
class AlpacaOrder:
    """The fields of Alpaca's order object this adapter relies on, validated."""

    id: str
    client_order_id: str
    symbol: str
    status: str
    quantity: Decimal
    filled_quantity: Decimal
    average_fill_price: Decimal | None
    created_at: datetime

    @classmethod
    def parse(cls, raw: object) -> AlpacaOrder:
        order = mapping_field(raw, "Alpaca order")
        where = f"Alpaca order {order.get('id')!r}"
        status = _text(order, "status", where)
        if status in _REPLACED:
            raise AlpacaDataError(f"{where} was replaced at Alpaca; this system never does")
        if status not in _STATUSES:
            raise AlpacaDataError(f"{where}: unknown status {status!r}")
        quantity = _decimal(order, "qty", where)
        if quantity is None:
            raise AlpacaDataError(f"{where}: no qty (a notional order is not supported)")
        if quantity <= 0:
            raise AlpacaDataError(f"{where}: qty must be positive, got {quantity}")
        filled = _required(order, "filled_qty", where)
        if not 0 <= filled <= quantity:
            raise AlpacaDataError(f"{where}: filled_qty {filled} is outside 0..{quantity}")
        average = _decimal(order, "filled_avg_price", where)
        if filled > 0 and (average is None or average <= 0):
            raise AlpacaDataError(f"{where}: filled {filled} at average price {average}")
        if status == "filled" and filled != quantity:
            raise AlpacaDataError(f"{where}: status filled with filled_qty {filled} of {quantity}")
        if status == "partially_filled" and filled == 0:
            raise AlpacaDataError(f"{where}: status partially_filled with nothing filled")
        return cls(
            id=_text(order, "id", where),
            client_order_id=_text(order, "client_order_id", where),
            symbol=_text(order, "symbol", where),
            status=status,
            quantity=quantity,
            filled_quantity=filled,
            average_fill_price=average,
            created_at=instant_field(order, "created_at", where),
        )

    @property
    def our_status(self) -> OrderStatus:
        status = _STATUSES[self.status]
        if status is not None:
            return status
        if self.filled_quantity == 0:
            return OrderStatus.SUBMITTED
        if self.filled_quantity < self.quantity:
            return OrderStatus.PARTIALLY_FILLED
        return OrderStatus.FILLED


def order_body(request: OrderRequest) -> dict[str, str]:
    """The JSON body of POST /v2/orders: our order id as the client order id, decimals as
    exact strings."""
    body = {
        "symbol": request.symbol,
        "qty": decimal_text(request.quantity),
        "side": request.side.value,
        "type": request.order_type.value,
        "time_in_force": request.time_in_force.value,
        "client_order_id": str(request.order_id),
    }
    needs_limit = request.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
    needs_stop = request.order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
    if needs_limit != (request.limit_price is not None):
        raise BrokerRejectedError(
            f"a {request.order_type} order with limit price {request.limit_price}"
        )
    if needs_stop != (request.stop_price is not None):
        raise BrokerRejectedError(
            f"a {request.order_type} order with stop price {request.stop_price}"
        )
    if request.limit_price is not None:
        body["limit_price"] = decimal_text(request.limit_price)
    if request.stop_price is not None:
        body["stop_price"] = decimal_text(request.stop_price)
    trailing = request.order_type is OrderType.TRAILING_STOP
    trails = [t for t in (request.trail_price, request.trail_percent) if t is not None]
    if len(trails) != (1 if trailing else 0):
        raise BrokerRejectedError(
            f"a {request.order_type} order with trail_price {request.trail_price} "
            f"and trail_percent {request.trail_percent}"
        )
    # Alpaca's own trailing_stop: it keeps the high-water mark (`hwm`) on its side.
    if request.trail_price is not None:
        body["trail_price"] = decimal_text(request.trail_price)
    if request.trail_percent is not None:
        body["trail_percent"] = decimal_text(request.trail_percent)
    return body


def fill_event(
    order: AlpacaOrder, cumulative: Decimal, quantity: Decimal, price: Decimal, at: datetime
) -> BrokerEvent:
    return BrokerEvent(
        event=BrokerEventType.FILL
        if cumulative == order.quantity
        else BrokerEventType.PARTIAL_FILL,
        client_order_id=order.client_order_id,
        timestamp=at,
        broker_order_id=order.id,
        execution_id=execution_id_for(order.id, cumulative),
        quantity=quantity,
        price=price,
        commission=Decimal(0),  # Alpaca charges no commission on US equities
        cumulative_quantity=cumulative,
    )


# -- REST: the broker -------------------------------------------------------------------------


def normalize_base_url(url: str) -> str:
    """`https://paper-api.alpaca.markets[/][v2]` -> `https://paper-api.alpaca.markets`
    (alpaca-py appends /v2 itself)."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    if path.endswith("/v2"):
        path = path[: -len("/v2")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def stream_url_for(base_url: str) -> str:
    """The trade_updates websocket of the REST base URL: https://host -> wss://host/stream."""
    parts = urlsplit(normalize_base_url(base_url))
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path + "/stream", "", ""))


class _TimeoutSession(requests.Session):
    """A requests session with a default timeout and no transport-level retries."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout
        for prefix in ("http://", "https://"):
            self.mount(prefix, HTTPAdapter(max_retries=0))

    def request(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)


def _no_hidden_retries(client: TradingClient, timeout: float) -> None:
    """Make every alpaca-py call one HTTP request with a timeout.

    RESTClient retries 429/504 `_retry` times on its own and its session has no timeout;
    TradingClient's constructor exposes neither. If a new alpaca-py renamed these
    attributes, refuse to start: a hidden retry of a submit is not acceptable.
    """
    if not hasattr(client, "_retry") or not isinstance(
        getattr(client, "_session", None), requests.Session
    ):
        raise RuntimeError(
            "this alpaca-py version hides its retry settings elsewhere; cannot switch them off"
        )
    client._retry = 0
    client._session = _TimeoutSession(timeout)


def _status(err: APIError) -> int | None:
    status = err.status_code
    return status if isinstance(status, int) else None


def _message(err: APIError) -> str:
    try:
        body = json.loads(str(err))
    except ValueError:
        return str(err)[:300]
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])
    return str(err)[:300]


class _RateGate:
    """Alpaca's request budget as this process last heard of it (a 429's reset instant)."""

    def __init__(self, max_wait: float, clock: Callable[[], float]) -> None:
        self.max_wait = max_wait
        self.clock = clock
        self.resume_at = 0.0

    def hold(self, err: APIError) -> None:
        now = self.clock()
        response = err.response
        header = response.headers.get("X-RateLimit-Reset") if response is not None else None
        try:
            reset = int(header) if header is not None else None
        except ValueError:
            reset = None
        # The window is a minute; a reset outside (now, now + 61 s] is clock skew or noise.
        if reset is None or reset <= now:
            reset_at = now + 1
        else:
            reset_at = min(reset, now + 61)
        self.resume_at = max(self.resume_at, reset_at)

    async def wait(self) -> None:
        remaining = self.resume_at - self.clock()
        if remaining <= 0:
            return
        if remaining > self.max_wait:
            raise AlpacaRateLimitedError(
                f"over Alpaca's request budget for another {remaining:.0f} s (X-RateLimit-Reset)"
            )
        await asyncio.sleep(remaining)


class AlpacaBroker:
    """The `Broker` of the order saga at Alpaca (paper, live or any base URL)."""

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        base_url: str = PAPER_URL,
        *,
        timeout_seconds: float = 10.0,
        max_rate_limit_wait_seconds: float = 10.0,
        ready_ttl_seconds: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from alpaca.trading.client import TradingClient

        self.base_url = normalize_base_url(base_url)
        self._client = TradingClient(
            api_key=api_key, secret_key=secret_key, raw_data=True, url_override=self.base_url
        )
        _no_hidden_retries(self._client, timeout_seconds)
        self._gate = _RateGate(max_rate_limit_wait_seconds, clock)
        self._clock = clock
        self._ready_ttl = ready_ttl_seconds
        self._ready: tuple[float, bool] | None = None
        # Client order ids whose submit had no clear answer in this process: look them up
        # before sending again (a later attempt in another process is known by its attempt).
        self._uncertain: set[str] = set()
        # Executions up to a cumulative quantity never change: (order id, filled) -> fills.
        self._fills: OrderedDict[tuple[str, Decimal], list[BrokerEvent]] = OrderedDict()
        # A fill history longer than one call's pages: order id -> (query to resume with,
        # the order's fills read so far), so the next attempt goes on instead of restarting.
        self._fill_cursors: OrderedDict[str, tuple[dict[str, str | int], list[_FillRow]]] = (
            OrderedDict()
        )

    def __repr__(self) -> str:
        return f"AlpacaBroker({self.base_url})"

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        await self._gate.wait()
        try:
            return await asyncio.to_thread(fn, *args)
        except APIError as err:
            if _status(err) == 429:
                self._gate.hold(err)
            raise
        except requests.exceptions.JSONDecodeError as err:
            raise AlpacaDataError(f"Alpaca answered something that is not JSON: {err}") from err

    def _failure(self, err: APIError, what: str) -> AlpacaError:
        status = _status(err)
        if status == 429:
            return AlpacaRateLimitedError(f"{what}: Alpaca answered 429 (rate limited)")
        return AlpacaError(f"{what}: Alpaca answered {status}: {_message(err)}")

    async def _find(self, client_order_id: str) -> AlpacaOrder | None:
        """The order with this client order id, or None if Alpaca has none."""
        try:
            raw = await self._call(self._client.get_order_by_client_id, client_order_id)
        except APIError as err:
            if _status(err) == 404:
                return None
            raise self._failure(err, f"look-up of client order id {client_order_id}") from err
        order = AlpacaOrder.parse(raw)
        if order.client_order_id != client_order_id:
            raise AlpacaDataError(
                f"asked for client order id {client_order_id}, Alpaca answered with "
                f"{order.client_order_id!r}"
            )
        return order

    def _doubtful(self, client_order_id: str) -> bool:
        if client_order_id in self._uncertain:
            return True
        return activity.in_activity() and activity.info().attempt > 1

    def _existing(self, order: AlpacaOrder, request: OrderRequest) -> SubmitResult:
        if order.symbol != request.symbol or order.quantity != request.quantity:
            raise AlpacaDataError(
                f"client order id {order.client_order_id} names {order.quantity} {order.symbol} "
                f"at Alpaca, not {request.quantity} {request.symbol}"
            )
        self._uncertain.discard(order.client_order_id)
        return SubmitResult(broker_order_id=order.id, already_existed=True)

    async def _resolve(self, request: OrderRequest, cause: Exception) -> SubmitResult:
        """After a submit without a clear answer: the order if it landed, else an error."""
        client_order_id = str(request.order_id)
        self._uncertain.add(client_order_id)
        try:
            order = await self._find(client_order_id)
        except AlpacaError as err:
            raise AlpacaError(
                f"submit of {client_order_id} had no clear answer ({cause}) and the look-up by "
                f"client order id failed too ({err}); the next attempt looks it up first"
            ) from err
        if order is None:
            raise AlpacaError(
                f"submit of {client_order_id} had no clear answer ({cause}) and Alpaca has no "
                "such order: the next attempt sends it again"
            ) from cause
        return self._existing(order, request)

    async def submit(self, request: OrderRequest) -> SubmitResult:
        """Place the order with our order id as its client order id.

        Running it twice is harmless: a submit that may have landed earlier (an ambiguous
        answer in this process, or any retry attempt of the activity) looks the client order
        id up before sending, and Alpaca refuses a second order with the same client order id,
        which this reads as "already accepted" and answers with the existing order.
        """
        client_order_id = str(request.order_id)
        body = order_body(request)
        if self._doubtful(client_order_id):
            existing = await self._find(client_order_id)
            if existing is not None:
                return self._existing(existing, request)
        try:
            raw = await self._call(self._client.post, "/orders", body)
        except APIError as err:
            status = _status(err)
            message = _message(err)
            if _DUPLICATE in message.lower():
                return await self._resolve(request, err)
            if status is None or status == 429 or status >= 500:
                return await self._resolve(request, self._failure(err, "submit"))
            if status in (401, 404):  # our key or URL, not the order: retry once fixed
                raise AlpacaError(f"Alpaca answered {status} to a submit: {message}") from err
            raise BrokerRejectedError(f"Alpaca refused the order ({status}): {message}") from err
        except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as err:
            return await self._resolve(request, err)
        try:
            order = AlpacaOrder.parse(raw)
        except AlpacaDataError:
            self._uncertain.add(client_order_id)  # something came back: it may have landed
            raise
        if order.client_order_id != client_order_id:
            self._uncertain.add(client_order_id)
            raise AlpacaDataError(
                f"submitted {client_order_id}, Alpaca answered order {order.client_order_id!r}"
            )
        self._uncertain.discard(client_order_id)
        return SubmitResult(broker_order_id=order.id, already_existed=False)

    async def _order(self, client_order_id: str) -> AlpacaOrder:
        order = await self._find(client_order_id)
        if order is None:
            raise BrokerOrderNotFoundError(f"Alpaca has no order {client_order_id}")
        return order

    async def _state(self, order: AlpacaOrder) -> BrokerOrderState:
        return BrokerOrderState(
            client_order_id=order.client_order_id,
            broker_order_id=order.id,
            status=order.our_status,
            filled_quantity=order.filled_quantity,
            executions=await self._executions(order),
            reason=f"{order.status} at Alpaca" if order.status in ("rejected", "expired") else None,
        )

    async def get_order(self, client_order_id: str) -> BrokerOrderState:
        """The order's status and every execution so far, with the stream's execution ids.

        Read-only at Alpaca: running it twice reads twice.
        """
        return await self._state(await self._order(client_order_id))

    async def _executions(self, order: AlpacaOrder) -> list[BrokerEvent]:
        if order.filled_quantity == 0:
            return []
        key = (order.id, order.filled_quantity)
        if key in self._fills:
            self._fills.move_to_end(key)
            return list(self._fills[key])
        fills = await self._fill_activities(order)
        executions: list[BrokerEvent] = []
        reached = Decimal(0)
        for cumulative, quantity, price, at in sorted(fills, key=lambda fill: fill[0]):
            if cumulative > order.filled_quantity:
                break  # filled after the order snapshot was taken; the next poll has it
            if cumulative - quantity != reached:
                raise AlpacaError(
                    f"Alpaca's fill history of order {order.id} has a gap at {reached} "
                    f"(next fill: {quantity} to {cumulative}); asking again later"
                )
            executions.append(fill_event(order, cumulative, quantity, price, at))
            reached = cumulative
        if reached != order.filled_quantity:
            raise AlpacaError(
                f"order {order.id} has filled {order.filled_quantity} but Alpaca lists fills up "
                f"to {reached} so far; asking again later"
            )
        self._fills[key] = executions
        if len(self._fills) > _FILL_CACHE_SIZE:
            self._fills.popitem(last=False)
        return list(executions)

    async def _fill_activities(self, order: AlpacaOrder) -> list[_FillRow]:
        """(cumulative, quantity, price, time) of every FILL activity of the order, paging
        forward from just before it was created until its filled quantity is covered.

        The activities are the whole account's, so an order that lived through many other
        fills needs many pages. One call reads at most `_FILL_MAX_PAGES` of them (it must end
        within its activity timeout and the request budget); then it keeps its place and
        fails, and the next call (Temporal's retry) resumes from there."""
        after = (order.created_at - timedelta(seconds=1)).astimezone(UTC)
        params: dict[str, str | int] = {
            "after": after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "direction": "asc",
            "page_size": _FILL_PAGE_SIZE,
        }
        fills: list[_FillRow] = []
        resumed = self._fill_cursors.pop(order.id, None)
        if resumed is not None:
            params, fills = dict(resumed[0]), list(resumed[1])
        covered = sum((fill[1] for fill in fills), Decimal(0))
        for _ in range(_FILL_MAX_PAGES):
            try:
                page = await self._call(self._client.get, "/account/activities/FILL", params)
            except APIError as err:
                raise self._failure(err, f"fill history of order {order.id}") from err
            if not isinstance(page, list):
                raise AlpacaDataError(f"Alpaca's FILL activities are not a list: {page!r:.200}")
            for item in page:
                record = mapping_field(item, "Alpaca FILL activity")
                if record.get("order_id") != order.id:
                    continue
                where = f"Alpaca FILL activity {record.get('id')!r}"
                quantity = positive_field(record, "qty", where)
                price = positive_field(record, "price", where)
                cumulative = positive_field(record, "cum_qty", where)
                fills.append(
                    (cumulative, quantity, price, instant_field(record, "transaction_time", where))
                )
                covered += quantity
            if covered >= order.filled_quantity or len(page) < _FILL_PAGE_SIZE:
                return fills
            params["page_token"] = _text(mapping_field(page[-1], "activity"), "id", "activity")
        self._fill_cursors[order.id] = (params, fills)
        if len(self._fill_cursors) > _FILL_CACHE_SIZE:
            self._fill_cursors.popitem(last=False)
        raise AlpacaError(
            f"fill history of order {order.id}: {_FILL_MAX_PAGES} more pages of account "
            f"activities read, its fills up to {covered} of {order.filled_quantity} found; "
            "the next attempt resumes there"
        )

    async def cancel(self, client_order_id: str) -> BrokerOrderState:
        """Ask Alpaca to cancel the order; returns its state afterwards.

        Running it twice is harmless: canceling an order that is already closed is refused
        by Alpaca with 422, which this ignores, and the state returned says what it is.
        """
        order = await self._order(client_order_id)
        try:
            await self._call(self._client.cancel_order_by_id, order.id)
        except APIError as err:
            if _status(err) == 404:
                raise BrokerOrderNotFoundError(f"Alpaca has no order {order.id}") from err
            if _status(err) != 422:  # 422: not cancelable any more (filled, canceled, ...)
                raise self._failure(err, f"cancel of {client_order_id}") from err
        return await self._state(await self._order(client_order_id))

    async def positions(self) -> dict[str, Decimal]:
        """Open positions, signed (negative when short), by symbol. Read-only."""
        try:
            raw = await self._call(self._client.get_all_positions)
        except APIError as err:
            raise self._failure(err, "positions") from err
        if not isinstance(raw, list):
            raise AlpacaDataError(f"Alpaca's positions are not a list: {raw!r:.200}")
        result: dict[str, Decimal] = {}
        for item in raw:
            position = mapping_field(item, "Alpaca position")
            symbol = _text(position, "symbol", "Alpaca position")
            quantity = _required(position, "qty", f"Alpaca position {symbol}")
            if position.get("side") == "short" and quantity > 0:
                quantity = -quantity
            result[symbol] = quantity
        return result

    async def open_orders(self) -> list[BrokerOrderState]:
        """Every open order of the account, oldest first, without executions (ask
        `get_order` for those); the broker's side of reconciliation. Read-only.

        Alpaca lists at most 500 orders a page; the next page starts after the newest
        creation time seen (orders created in the very same instant as a page's last one
        could be missed: reconciliation then reports them the next day).
        """
        params: dict[str, str | int] = {
            "status": "open",
            "direction": "asc",
            "limit": _OPEN_ORDERS_PAGE_SIZE,
        }
        result: list[BrokerOrderState] = []
        for _ in range(_OPEN_ORDERS_MAX_PAGES):
            try:
                page = await self._call(self._client.get, "/orders", params)
            except APIError as err:
                raise self._failure(err, "open orders") from err
            if not isinstance(page, list):
                raise AlpacaDataError(f"Alpaca's open orders are not a list: {page!r:.200}")
            orders = [AlpacaOrder.parse(item) for item in page]
            result.extend(
                BrokerOrderState(
                    client_order_id=order.client_order_id,
                    broker_order_id=order.id,
                    status=order.our_status,
                    filled_quantity=order.filled_quantity,
                )
                for order in orders
            )
            if len(orders) < _OPEN_ORDERS_PAGE_SIZE:
                return result
            params["after"] = orders[-1].created_at.astimezone(UTC).isoformat()
        raise AlpacaError(f"more than {len(result)} open orders at Alpaca; cannot list them all")

    async def _account(self) -> Mapping[str, Any]:
        try:
            raw = await self._call(self._client.get_account)
        except APIError as err:
            raise self._failure(err, "account") from err
        return mapping_field(raw, "Alpaca account")

    async def account(self) -> dict[str, Decimal]:
        """Cash, buying power and equity of the account. Read-only."""
        raw = await self._account()
        return {
            field: _required(raw, field, "Alpaca account")
            for field in ("cash", "buying_power", "equity")
        }

    async def ready(self) -> bool:
        """True when the account answers and may trade; remembered for a few seconds so a
        frequently probed /ready does not spend the request budget."""
        now = self._clock()
        if self._ready is not None and self._ready[0] > now:
            return self._ready[1]
        try:
            raw = await self._account()
            ok = raw.get("status") == "ACTIVE" and not raw.get("trading_blocked")
            if not ok:
                log.warning(
                    "Alpaca account is %s (trading_blocked=%s)",
                    raw.get("status"),
                    raw.get("trading_blocked"),
                )
        except Exception as err:  # readiness reports any failure as "not ready"
            log.warning("Alpaca is not ready: %s", err)
            ok = False
        self._ready = (now + self._ready_ttl, ok)
        return ok
