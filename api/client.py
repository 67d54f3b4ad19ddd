"""The Python client of the signed API, on httpx: `TradingClient` (sync) and
`AsyncTradingClient`, signing every request as the server verifies it and raising one
exception class per envelope code.

    client = TradingClient.from_credentials()          # .trading/credentials.json
    order = client.place_order("AAPL", "10", "buy", limit_price="150.50")
    client.cancel_order(order.order_id)
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID

import httpx

from api.schemas import (
    BarList,
    CancelAllResult,
    Health,
    OrderPage,
    OrderPlaced,
    OrderPublic,
    PortfolioPublic,
    PositionPublic,
    QuotePublic,
    Readiness,
)
from api.signing import signed_headers

DEFAULT_CREDENTIALS = Path(".trading/credentials.json")
T = TypeVar("T")
Number = Decimal | int | str


# -- errors ------------------------------------------------------------------------------------


class TradingApiError(Exception):
    """An error answer of the API: the envelope's code, message, details and request id."""

    code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(f"{self.code}: {message}")
        self.message = message
        self.status = status
        self.details = details or {}
        self.request_id = request_id
        self.headers = headers or httpx.Headers()

    @property
    def retry_after(self) -> int | None:
        """Seconds to wait before retrying, when the answer says (429, 503)."""
        value = self.headers.get("Retry-After")
        return int(value) if value and value.isdigit() else None


class ValidationError(TradingApiError):
    code = "VALIDATION_ERROR"


class InsufficientFundsError(TradingApiError):
    code = "INSUFFICIENT_FUNDS"


class RiskLimitExceededError(TradingApiError):
    code = "RISK_LIMIT_EXCEEDED"


class SymbolNotFoundError(TradingApiError):
    code = "SYMBOL_NOT_FOUND"


class MarketClosedError(TradingApiError):
    code = "MARKET_CLOSED"


class RateLimitExceededError(TradingApiError):
    code = "RATE_LIMIT_EXCEEDED"


class AuthenticationError(TradingApiError):
    code = "AUTHENTICATION_ERROR"


class NotFoundError(TradingApiError):
    code = "NOT_FOUND"


class ConflictError(TradingApiError):
    code = "CONFLICT"


class TradingHaltedError(TradingApiError):
    """The portfolio's kill switch is HALTED: no new order until it is resumed."""

    code = "TRADING_HALTED"


class UnsupportedMediaTypeError(TradingApiError):
    code = "UNSUPPORTED_MEDIA_TYPE"


class ServiceUnavailableError(TradingApiError):
    """A dependency did not answer in time; retry after `retry_after` seconds."""

    code = "SERVICE_UNAVAILABLE"


class InternalError(TradingApiError):
    code = "INTERNAL_ERROR"


ERRORS: dict[str, type[TradingApiError]] = {
    cls.code: cls
    for cls in (
        ValidationError,
        InsufficientFundsError,
        RiskLimitExceededError,
        SymbolNotFoundError,
        MarketClosedError,
        RateLimitExceededError,
        AuthenticationError,
        NotFoundError,
        ConflictError,
        TradingHaltedError,
        UnsupportedMediaTypeError,
        ServiceUnavailableError,
        InternalError,
    )
}


def error_from(response: httpx.Response) -> TradingApiError:
    """The typed error of an error answer; InternalError when it carries no envelope."""
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
        details, request_id = dict(error.get("details") or {}), error.get("request_id")
    except (ValueError, KeyError, TypeError):
        code, message = "INTERNAL_ERROR", f"HTTP {response.status_code} without an error envelope"
        details, request_id = {}, response.headers.get("X-Request-ID")
    kind = ERRORS.get(code, InternalError)
    return kind(
        message,
        status=response.status_code,
        details=details,
        request_id=request_id,
        headers=response.headers,
    )


# -- credentials and signing -------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """The credentials file (`make up` writes .trading/credentials.json; docs/signing.md)."""

    api_url: str
    api_key: str
    api_secret: str
    portfolio_id: str | None = None
    temporal_ui: str | None = None

    @classmethod
    def load(cls, path: Path | str = DEFAULT_CREDENTIALS) -> Credentials:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no credentials at {path}: run `make up` (it writes them), or "
                "`trading keys create --portfolio ID` and write the file yourself"
            ) from None
        try:
            return cls(
                api_url=data["api_url"],
                api_key=data["api_key"],
                api_secret=data["api_secret"],
                portfolio_id=data.get("portfolio_id"),
                temporal_ui=data.get("temporal_ui"),
            )
        except (KeyError, TypeError):
            raise ValueError(f"{path} needs api_url, api_key and api_secret") from None

    def save(self, path: Path | str = DEFAULT_CREDENTIALS) -> None:
        """Write the file readable by its owner only (it holds the secret)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump({k: v for k, v in asdict(self).items() if v is not None}, file, indent=2)
            file.write("\n")
        path.chmod(0o600)  # O_CREAT's mode does not apply to a file that already existed


class RequestSigner(httpx.Auth):
    """Signs each request as sent: method, the target exactly as written on the request
    line (path, then `?` and the query; a bare trailing `?` is kept, see api/signing.py),
    the raw body, unix seconds."""

    requires_request_body = True

    def __init__(self, api_key: str, api_secret: str, clock: Callable[[], float] = time.time):
        self.api_key = api_key
        self._secret = api_secret
        self.clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        headers = signed_headers(
            self.api_key,
            self._secret,
            request.method,
            request.url.raw_path,  # bytes: the request line's target, exactly as sent
            request.content,
            int(self.clock()),
        )
        request.headers.update(headers)
        yield request


# -- the calls, shared by the sync and async clients -------------------------------------------


@dataclass(frozen=True)
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: Sequence[tuple[str, str | int]] = ()
    body: dict[str, Any] | None = None


def _text(value: Number) -> str:
    return f"{value:f}" if isinstance(value, Decimal) else str(value)


def _place(
    symbol: str,
    quantity: Number,
    side: str,
    order_type: str | None,
    limit_price: Number | None,
    stop_price: Number | None,
    time_in_force: str,
    client_order_id: str | None,
    reason: str | None,
    trail_price: Number | None = None,
    trail_percent: Number | None = None,
    execution: dict[str, Any] | None = None,
    order_class: str | None = None,
    take_profit: Number | None = None,
    stop_loss: Number | None = None,
    stop_loss_limit: Number | None = None,
) -> _Call[OrderPlaced]:
    # A fresh client_order_id per call: a retry of this call must reuse it (pass it in),
    # and two orders meant to be two never share a body, so never a signature.
    body: dict[str, Any] = {
        "symbol": symbol,
        "quantity": _text(quantity),
        "side": side,
        "time_in_force": time_in_force,
        "client_order_id": client_order_id or str(uuid.uuid4()),
    }
    optional = {
        "order_type": order_type,
        "limit_price": None if limit_price is None else _text(limit_price),
        "stop_price": None if stop_price is None else _text(stop_price),
        "trail_price": None if trail_price is None else _text(trail_price),
        "trail_percent": None if trail_percent is None else _text(trail_percent),
        "execution": execution,
        "reason": reason,
    }
    if take_profit is not None or stop_loss is not None:
        # A bracket unless told otherwise (oto: one leg; oco: exits of a held position).
        both = take_profit is not None and stop_loss is not None
        optional["order_class"] = order_class or ("bracket" if both else "oto")
    elif order_class is not None:
        optional["order_class"] = order_class
    if take_profit is not None:
        optional["take_profit"] = {"limit_price": _text(take_profit)}
    if stop_loss is not None:
        leg = {"stop_price": _text(stop_loss)}
        if stop_loss_limit is not None:
            leg["limit_price"] = _text(stop_loss_limit)
        optional["stop_loss"] = leg
    body.update({name: value for name, value in optional.items() if value is not None})
    return _Call("POST", "/api/v1/orders", OrderPlaced.model_validate, body=body)


def _list(
    status: str | Sequence[str] | None, symbol: str | None, limit: int, cursor: str | None
) -> _Call[OrderPage]:
    statuses = [status] if isinstance(status, str) else list(status or [])
    params: list[tuple[str, str | int]] = [("status", s) for s in statuses]
    if symbol is not None:
        params.append(("symbol", symbol))
    params.append(("limit", limit))
    if cursor is not None:
        params.append(("cursor", cursor))
    return _Call("GET", "/api/v1/orders", OrderPage.model_validate, params=params)


def _close(
    symbol: str,
    quantity: Number | None,
    percentage: Number | None,
    client_order_id: str | None,
) -> _Call[OrderPlaced]:
    params: list[tuple[str, str | int]] = []
    if quantity is not None:
        params.append(("quantity", _text(quantity)))
    if percentage is not None:
        params.append(("percentage", _text(percentage)))
    if client_order_id is not None:
        params.append(("client_order_id", client_order_id))
    path = f"/api/v1/positions/{symbol}"
    return _Call("DELETE", path, OrderPlaced.model_validate, params=params)


_CANCEL_ALL = _Call("DELETE", "/api/v1/orders", CancelAllResult.model_validate)


# How long wait_for_order sleeps between reads: quick at first (a market order fills in a
# few hundred milliseconds), then once a second, well inside the read rate limit.
WAIT_INTERVALS = (0.1, 0.2, 0.4, 0.8)
WAIT_INTERVAL_MAX = 1.0


def _wait_interval(attempt: int, error: TradingApiError | None) -> float:
    if isinstance(error, RateLimitExceededError | ServiceUnavailableError):
        return float(error.retry_after or 1)
    return WAIT_INTERVALS[attempt] if attempt < len(WAIT_INTERVALS) else WAIT_INTERVAL_MAX


@dataclass(frozen=True)
class OrderEvent:
    """One order update of the event stream: its id (resume after it), kind and order."""

    id: str
    event: str
    order: OrderPublic


def _parse_events(lines: Iterator[str]) -> Iterator[OrderEvent]:
    fields: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
            continue
        if "data" in fields:
            order = OrderPublic.model_validate_json(fields["data"])
            yield OrderEvent(fields.get("id", ""), fields.get("event", "message"), order)
        fields = {}


def _positions(data: Any) -> list[PositionPublic]:
    return [PositionPublic.model_validate(item) for item in data["positions"]]


class _Base:
    def __init__(self, api_url: str, api_key: str, api_secret: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.auth = RequestSigner(api_key, api_secret)

    @staticmethod
    def _request(http: httpx.Client | httpx.AsyncClient, call: _Call[Any]) -> httpx.Request:
        content = None
        headers = {}
        if call.body is not None:
            content = json.dumps(call.body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
        return http.build_request(
            call.method, call.path, params=list(call.params), content=content, headers=headers
        )

    @staticmethod
    def _answer(call: _Call[T], response: httpx.Response) -> T:
        if response.status_code >= 400:
            raise error_from(response)
        return call.parse(response.json())


class TradingClient(_Base):
    """Synchronous client; use as a context manager or call close()."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        api_secret: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(api_url, api_key, api_secret)
        self.http = httpx.Client(
            base_url=self.api_url, auth=self.auth, timeout=timeout, transport=transport
        )

    @classmethod
    def from_credentials(
        cls, path: Path | str = DEFAULT_CREDENTIALS, **options: Any
    ) -> TradingClient:
        credentials = Credentials.load(path)
        return cls(credentials.api_url, credentials.api_key, credentials.api_secret, **options)

    def _run(self, call: _Call[T]) -> T:
        return self._answer(call, self.http.send(self._request(self.http, call)))

    def place_order(
        self,
        symbol: str,
        quantity: Number,
        side: str,
        *,
        order_type: str | None = None,
        limit_price: Number | None = None,
        stop_price: Number | None = None,
        time_in_force: str = "day",
        client_order_id: str | None = None,
        reason: str | None = None,
        trail_price: Number | None = None,
        trail_percent: Number | None = None,
        execution: dict[str, Any] | None = None,
        order_class: str | None = None,
        take_profit: Number | None = None,
        stop_loss: Number | None = None,
        stop_loss_limit: Number | None = None,
    ) -> OrderPlaced:
        return self._run(
            _place(
                symbol,
                quantity,
                side,
                order_type,
                limit_price,
                stop_price,
                time_in_force,
                client_order_id,
                reason,
                trail_price,
                trail_percent,
                execution,
                order_class,
                take_profit,
                stop_loss,
                stop_loss_limit,
            )
        )

    def get_order(self, order_id: UUID | str) -> OrderPublic:
        return self._run(_Call("GET", f"/api/v1/orders/{order_id}", OrderPublic.model_validate))

    def events(
        self,
        *,
        last_event_id: str | None = None,
        since: int | None = None,
        limit: int | None = None,
    ) -> Iterator[OrderEvent]:
        """The portfolio's order updates as they happen (GET /events, Server-Sent Events);
        pass the last event's `id` as `last_event_id` to resume without a gap."""
        params: list[tuple[str, str | int | float | bool | None]] = []
        if since is not None:
            params.append(("since", since))
        if limit is not None:
            params.append(("limit", limit))
        headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
        request = self.http.build_request("GET", "/api/v1/events", params=params, headers=headers)
        response = self.http.send(request, stream=True)
        try:
            if response.status_code >= 400:
                response.read()
                raise error_from(response)
            yield from _parse_events(response.iter_lines())
        finally:
            response.close()

    def wait_for_order(
        self,
        order_id: UUID | str,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> OrderPublic:
        """Read the order until it is terminal (filled, canceled, expired, rejected) or
        `timeout` seconds have passed; returns the last order read. Rate-limited and 503
        answers are waited out (Retry-After) inside the timeout."""
        deadline = clock() + timeout
        attempt = 0
        while True:
            error: TradingApiError | None = None
            try:
                order = self.get_order(order_id)
                if order.status.is_terminal:
                    return order
            except (RateLimitExceededError, ServiceUnavailableError) as err:
                error = err
            pause = _wait_interval(attempt, error)
            if clock() + pause > deadline:
                if error is not None:
                    raise error
                return order
            time.sleep(pause)
            attempt += 1

    def cancel_order(self, order_id: UUID | str) -> OrderPublic:
        return self._run(_Call("DELETE", f"/api/v1/orders/{order_id}", OrderPublic.model_validate))

    def list_orders(
        self,
        status: str | Sequence[str] | None = None,
        symbol: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> OrderPage:
        return self._run(_list(status, symbol, limit, cursor))

    def cancel_all_orders(self) -> CancelAllResult:
        """Cancel every open order of the portfolio (DELETE /orders)."""
        return self._run(_CANCEL_ALL)

    def close_position(
        self,
        symbol: str,
        *,
        quantity: Number | None = None,
        percentage: Number | None = None,
        client_order_id: str | None = None,
    ) -> OrderPlaced:
        """Close all of a position, `quantity` shares or `percentage` % of it at market."""
        return self._run(_close(symbol, quantity, percentage, client_order_id))

    def get_portfolio(self) -> PortfolioPublic:
        return self._run(_Call("GET", "/api/v1/portfolio", PortfolioPublic.model_validate))

    def get_positions(self) -> list[PositionPublic]:
        return self._run(_Call("GET", "/api/v1/positions", _positions))

    def get_quote(self, symbol: str) -> QuotePublic:
        path = f"/api/v1/market-data/quote/{symbol}"
        return self._run(_Call("GET", path, QuotePublic.model_validate))

    def get_bars(self, symbol: str, timeframe: str = "1min", limit: int = 100) -> BarList:
        params: list[tuple[str, str | int]] = [("timeframe", timeframe), ("limit", limit)]
        path = f"/api/v1/market-data/bars/{symbol}"
        return self._run(_Call("GET", path, BarList.model_validate, params=params))

    def health(self) -> Health:
        return self._run(_Call("GET", "/health", Health.model_validate))

    def ready(self) -> Readiness:
        return self._run(_Call("GET", "/ready", Readiness.model_validate))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> TradingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncTradingClient(_Base):
    """Asynchronous client with the same methods; use `async with` or await aclose()."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        api_secret: str,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        super().__init__(api_url, api_key, api_secret)
        self.http = httpx.AsyncClient(
            base_url=self.api_url,
            auth=self.auth,
            timeout=timeout,
            transport=transport,
            limits=limits or httpx.Limits(),
        )

    @classmethod
    def from_credentials(
        cls, path: Path | str = DEFAULT_CREDENTIALS, **options: Any
    ) -> AsyncTradingClient:
        credentials = Credentials.load(path)
        return cls(credentials.api_url, credentials.api_key, credentials.api_secret, **options)

    async def _run(self, call: _Call[T]) -> T:
        return self._answer(call, await self.http.send(self._request(self.http, call)))

    async def place_order(
        self,
        symbol: str,
        quantity: Number,
        side: str,
        *,
        order_type: str | None = None,
        limit_price: Number | None = None,
        stop_price: Number | None = None,
        time_in_force: str = "day",
        client_order_id: str | None = None,
        reason: str | None = None,
        trail_price: Number | None = None,
        trail_percent: Number | None = None,
        execution: dict[str, Any] | None = None,
        order_class: str | None = None,
        take_profit: Number | None = None,
        stop_loss: Number | None = None,
        stop_loss_limit: Number | None = None,
    ) -> OrderPlaced:
        return await self._run(
            _place(
                symbol,
                quantity,
                side,
                order_type,
                limit_price,
                stop_price,
                time_in_force,
                client_order_id,
                reason,
                trail_price,
                trail_percent,
                execution,
                order_class,
                take_profit,
                stop_loss,
                stop_loss_limit,
            )
        )

    async def wait_for_order(
        self,
        order_id: UUID | str,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> OrderPublic:
        """As TradingClient.wait_for_order: the order once terminal, or after `timeout`."""
        import asyncio

        deadline = clock() + timeout
        attempt = 0
        while True:
            error: TradingApiError | None = None
            try:
                order = await self.get_order(order_id)
                if order.status.is_terminal:
                    return order
            except (RateLimitExceededError, ServiceUnavailableError) as err:
                error = err
            pause = _wait_interval(attempt, error)
            if clock() + pause > deadline:
                if error is not None:
                    raise error
                return order
            await asyncio.sleep(pause)
            attempt += 1

    async def get_order(self, order_id: UUID | str) -> OrderPublic:
        path = f"/api/v1/orders/{order_id}"
        return await self._run(_Call("GET", path, OrderPublic.model_validate))

    async def cancel_order(self, order_id: UUID | str) -> OrderPublic:
        path = f"/api/v1/orders/{order_id}"
        return await self._run(_Call("DELETE", path, OrderPublic.model_validate))

    async def list_orders(
        self,
        status: str | Sequence[str] | None = None,
        symbol: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> OrderPage:
        return await self._run(_list(status, symbol, limit, cursor))

    async def cancel_all_orders(self) -> CancelAllResult:
        """Cancel every open order of the portfolio (DELETE /orders)."""
        return await self._run(_CANCEL_ALL)

    async def close_position(
        self,
        symbol: str,
        *,
        quantity: Number | None = None,
        percentage: Number | None = None,
        client_order_id: str | None = None,
    ) -> OrderPlaced:
        """Close all of a position, `quantity` shares or `percentage` % of it at market."""
        return await self._run(_close(symbol, quantity, percentage, client_order_id))

    async def get_portfolio(self) -> PortfolioPublic:
        return await self._run(_Call("GET", "/api/v1/portfolio", PortfolioPublic.model_validate))

    async def get_positions(self) -> list[PositionPublic]:
        return await self._run(_Call("GET", "/api/v1/positions", _positions))

    async def get_quote(self, symbol: str) -> QuotePublic:
        path = f"/api/v1/market-data/quote/{symbol}"
        return await self._run(_Call("GET", path, QuotePublic.model_validate))

    async def get_bars(self, symbol: str, timeframe: str = "1min", limit: int = 100) -> BarList:
        params: list[tuple[str, str | int]] = [("timeframe", timeframe), ("limit", limit)]
        path = f"/api/v1/market-data/bars/{symbol}"
        return await self._run(_Call("GET", path, BarList.model_validate, params=params))

    async def health(self) -> Health:
        return await self._run(_Call("GET", "/health", Health.model_validate))

    async def ready(self) -> Readiness:
        return await self._run(_Call("GET", "/ready", Readiness.model_validate))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncTradingClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
