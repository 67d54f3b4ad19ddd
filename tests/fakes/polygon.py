"""A fake Polygon API: last NBBO, last trade, aggregates, ticker details and the stocks socket.

Speaks Polygon's documented JSON with prices as JSON numbers written digit for digit (so a
client that parses floats would lose digits the fake sent), `{"status": "NOT_FOUND", ...}`
for unknown tickers and `{"status": "ERROR", "error": ...}` for 429/5xx.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.fakes.server import (
    FakeServer,
    Fault,
    Faults,
    Recorded,
    apply_fault,
    dumps,
    json_response,
    recorded,
)

TIMESPAN_MS = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(at: datetime) -> int:
    return (at - EPOCH) // timedelta(milliseconds=1)


def _ns(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1) * 1000


def _not_found() -> Response:
    body = {"status": "NOT_FOUND", "request_id": uuid4().hex, "message": "Data not found."}
    return json_response(body, 404)


def _fault_error(fault: Fault) -> Response:
    status = fault.status or 500
    if status == 429:
        error = (
            "You've exceeded the maximum requests per minute, please wait or upgrade your "
            "subscription to continue. https://polygon.io/pricing"
        )
    else:
        error = "Internal server error"
    return json_response({"status": "ERROR", "request_id": uuid4().hex, "error": error}, status)


@dataclass
class Agg:
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    def json(self) -> dict[str, Any]:
        vwap = (self.high + self.low + self.close) / 3
        return {
            "v": self.volume,
            "vw": vwap.quantize(Decimal("0.0001")),
            "o": self.open,
            "c": self.close,
            "h": self.high,
            "l": self.low,
            "t": _ms(self.start),
            "n": 42,
        }


class FakePolygon(FakeServer):
    """`async with FakePolygon() as fake:`; `fake.base_url`, `fake.stream_url`."""

    stream_path = "/stocks"

    def __init__(self, api_key: str = "fake-polygon-key") -> None:
        self.api_key = api_key
        self.nbbo: dict[str, dict[str, Any]] = {}
        self.trades: dict[str, dict[str, Any]] = {}
        self.aggs: dict[tuple[str, int, str], list[Agg]] = {}
        self.tickers: set[str] = set()
        self.max_results = 50_000  # per aggregates answer; lower it to make a range page
        self.faults = Faults()
        self.requests: list[Recorded] = []
        self.listeners: dict[WebSocket, set[str]] = {}
        self.stream_connections = 0
        self.app = Starlette(
            routes=[
                Route("/v2/last/nbbo/{ticker}", self._nbbo),
                Route("/v2/last/trade/{ticker}", self._trade),
                Route(
                    "/v2/aggs/ticker/{ticker}/range/{multiplier:int}/{timespan}/{start}/{end}",
                    self._aggs,
                ),
                Route("/v3/reference/tickers/{ticker}", self._ticker),
                WebSocketRoute("/stocks", self._stream),
            ]
        )

    def hits(self, route: str) -> int:
        return sum(1 for r in self.requests if r.route == route)

    # -- state tests set ----------------------------------------------------------------------

    def set_quote(
        self,
        symbol: str,
        bid: str,
        ask: str,
        bid_size: int = 300,
        ask_size: int = 500,
        at: datetime | None = None,
    ) -> None:
        at = at or datetime.now(UTC)
        self.tickers.add(symbol)
        self.nbbo[symbol] = {
            "T": symbol,
            "P": Decimal(ask),
            "S": ask_size,
            "X": 11,
            "p": Decimal(bid),
            "s": bid_size,
            "x": 12,
            "c": [1],
            "i": [],
            "q": 23547,
            "t": _ns(at),
            "y": _ns(at),
            "z": 3,
        }

    def set_trade(
        self, symbol: str, price: str, size: int = 100, at: datetime | None = None
    ) -> None:
        at = at or datetime.now(UTC)
        self.tickers.add(symbol)
        self.trades[symbol] = {
            "T": symbol,
            "c": [37],
            "i": "118749",
            "p": Decimal(price),
            "q": 3135876,
            "r": 202,
            "s": size,
            "t": _ns(at),
            "x": 4,
            "y": _ns(at),
            "z": 3,
        }

    def add_aggs(self, symbol: str, multiplier: int, timespan: str, aggs: list[Agg]) -> None:
        self.tickers.add(symbol)
        key = (symbol, multiplier, timespan)
        self.aggs[key] = sorted(self.aggs.get(key, []) + aggs, key=lambda agg: agg.start)

    # -- HTTP ---------------------------------------------------------------------------------

    async def _serve(
        self, request: Request, route: str, normal: Callable[[], Awaitable[Response]]
    ) -> Response:
        self.requests.append(await recorded(request, route))
        key = request.query_params.get("apiKey") or request.headers.get(
            "Authorization", ""
        ).removeprefix("Bearer ")
        if key != self.api_key:
            body = {"status": "ERROR", "request_id": uuid4().hex, "error": "Unknown API Key"}
            return json_response(body, 401)
        return await apply_fault(self.faults.take(route), normal, _fault_error)

    async def _nbbo(self, request: Request) -> Response:
        ticker = request.path_params["ticker"]

        async def answer() -> Response:
            if ticker not in self.nbbo:
                return _not_found()
            body = {"request_id": uuid4().hex, "results": self.nbbo[ticker], "status": "OK"}
            return json_response(body)

        return await self._serve(request, "nbbo", answer)

    async def _trade(self, request: Request) -> Response:
        ticker = request.path_params["ticker"]

        async def answer() -> Response:
            if ticker not in self.trades:
                return _not_found()
            body = {"request_id": uuid4().hex, "results": self.trades[ticker], "status": "OK"}
            return json_response(body)

        return await self._serve(request, "trade", answer)

    async def _aggs(self, request: Request) -> Response:
        params = request.path_params
        ticker, multiplier, timespan = params["ticker"], params["multiplier"], params["timespan"]

        async def answer() -> Response:
            start, end = _bound(params["start"]), _bound(params["end"])
            aggs = [
                agg.json()
                for agg in self.aggs.get((ticker, multiplier, timespan), [])
                if start <= _ms(agg.start) <= end
            ]
            if request.query_params.get("sort", "asc") == "desc":
                aggs.reverse()
            limit = min(int(request.query_params.get("limit", "5000")), self.max_results)
            body: dict[str, Any] = {
                "ticker": ticker,
                "queryCount": len(aggs),
                "resultsCount": min(len(aggs), limit),
                "adjusted": request.query_params.get("adjusted", "true") == "true",
                "status": "OK",
                "request_id": uuid4().hex,
                "count": min(len(aggs), limit),
            }
            if aggs:
                body["results"] = aggs[:limit]
            if len(aggs) > limit:
                cursor = f"{ticker}/range/{multiplier}/{timespan}/{aggs[limit]['t']}/{end}"
                body["next_url"] = f"{self.base_url}/v2/aggs/ticker/{cursor}?cursor=x"
            return json_response(body)

        return await self._serve(request, "aggs", answer)

    async def _ticker(self, request: Request) -> Response:
        ticker = request.path_params["ticker"]

        async def answer() -> Response:
            if ticker not in self.tickers:
                return _not_found()
            results = {
                "ticker": ticker,
                "name": f"{ticker} Inc.",
                "market": "stocks",
                "locale": "us",
                "primary_exchange": "XNAS",
                "type": "CS",
                "active": True,
                "currency_name": "usd",
            }
            return json_response({"request_id": uuid4().hex, "results": results, "status": "OK"})

        return await self._serve(request, "ticker", answer)

    # -- the stocks websocket -----------------------------------------------------------------

    async def publish(self, events: list[dict[str, Any]]) -> None:
        """Send events to every authenticated connection subscribed to them."""
        for ws, topics in list(self.listeners.items()):
            mine = [e for e in events if f"{e.get('ev')}.{e.get('sym')}" in topics]
            if mine:
                try:
                    await ws.send_text(dumps(mine))
                except Exception:
                    self.listeners.pop(ws, None)

    async def publish_quote(
        self, symbol: str, bid: str, ask: str, bid_lots: int = 2, ask_lots: int = 3
    ) -> None:
        now = datetime.now(UTC)
        event = {
            "ev": "Q",
            "sym": symbol,
            "bx": 12,
            "bp": Decimal(bid),
            "bs": bid_lots,
            "ax": 11,
            "ap": Decimal(ask),
            "as": ask_lots,
            "c": 0,
            "i": [604],
            "t": _ms(now),
            "q": 50385480,
            "z": 3,
        }
        await self.publish([event])

    async def publish_trade(self, symbol: str, price: str, size: int = 100) -> None:
        now = datetime.now(UTC)
        event = {
            "ev": "T",
            "sym": symbol,
            "x": 4,
            "i": "12345",
            "z": 3,
            "p": Decimal(price),
            "s": size,
            "c": [0],
            "t": _ms(now),
            "q": 4567,
        }
        await self.publish([event])

    async def drop_streams(self) -> None:
        for ws in list(self.listeners):
            self.listeners.pop(ws, None)
            try:
                await ws.close(code=1011)
            except Exception:
                pass

    async def _stream(self, ws: WebSocket) -> None:
        await ws.accept()
        status = [{"ev": "status", "status": "connected", "message": "Connected Successfully"}]
        await ws.send_text(json.dumps(status))
        authed = False
        try:
            while True:
                message = json.loads(await ws.receive_text())
                action, params = message.get("action"), str(message.get("params", ""))
                if action == "auth":
                    authed = params == self.api_key
                    result = "auth_success" if authed else "auth_failed"
                    text = "authenticated" if authed else "authentication failed"
                    await ws.send_text(
                        json.dumps([{"ev": "status", "status": result, "message": text}])
                    )
                    if not authed:
                        await ws.close(code=1008)
                        return
                    self.listeners[ws] = set()
                    self.stream_connections += 1
                elif action == "subscribe" and authed:
                    topics = [t for t in params.split(",") if t]
                    self.listeners.setdefault(ws, set()).update(topics)
                    await ws.send_text(
                        json.dumps(
                            [
                                {
                                    "ev": "status",
                                    "status": "success",
                                    "message": f"subscribed to: {t}",
                                }
                                for t in topics
                            ]
                        )
                    )
        except WebSocketDisconnect:
            pass
        finally:
            self.listeners.pop(ws, None)


def _bound(value: str) -> int:
    """An aggregates range bound: a Unix ms timestamp or YYYY-MM-DD."""
    if value.isdigit():
        return int(value)
    return _ms(datetime.fromisoformat(value).replace(tzinfo=UTC))
