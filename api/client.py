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
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID

import httpx

from api.schemas import (
    BarList,
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
    """The credentials file of DESIGN.md (`make up` writes .trading/credentials.json)."""

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
        "reason": reason,
    }
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
            )
        )

    def get_order(self, order_id: UUID | str) -> OrderPublic:
        return self._run(_Call("GET", f"/api/v1/orders/{order_id}", OrderPublic.model_validate))

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
            )
        )

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
