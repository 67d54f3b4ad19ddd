"""A fake Alpaca trading API: the /v2 REST routes the adapter uses and the trade_updates socket.

Speaks Alpaca's documented JSON: decimal amounts as strings, errors as
`{"code": 40010001, "message": "..."}`, 429s with `X-RateLimit-*` headers, trade updates as
`{"stream": "trade_updates", "data": {"event": ..., "order": {...}, ...}}` in binary frames
(as the paper endpoint sends them). Orders fill only when a test says so (`fill`).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
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
    json_response,
    recorded,
)

OPEN = {"new", "accepted", "pending_new", "partially_filled", "pending_cancel", "held"}
ORDER_TYPES = {"market", "limit", "stop", "stop_limit"}
TIME_IN_FORCE = {"day", "gtc", "opg", "cls", "ioc", "fok"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"code": code, "message": message}, status, headers)


def _fault_error(fault: Fault) -> Response:
    status = fault.status or 500
    if status == 429:
        reset = math.ceil(time.time() + fault.reset_in)
        headers = {
            "X-RateLimit-Limit": "200",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset),
        }
        return _error(429, 42910000, "rate limit exceeded", headers)
    if status >= 500:
        return Response("<html><body>502 Bad Gateway</body></html>", status)
    return _error(status, status * 100000, "scripted failure")


class FakeAlpaca(FakeServer):
    """`async with FakeAlpaca() as fake:` serves it; `fake.base_url` is its REST root."""

    stream_path = "/stream"

    def __init__(
        self,
        api_key: str = "fake-key",
        secret_key: str = "fake-secret",
        cash: Decimal = Decimal("100000"),
        prices: dict[str, Decimal] | None = None,
    ) -> None:
        self.api_key = api_key
        self.secret_key = secret_key
        self.cash = cash
        self.prices = prices or {"AAPL": Decimal("187.00"), "MSFT": Decimal("410.00")}
        self.orders: dict[str, dict[str, Any]] = {}
        self.by_client_id: dict[str, str] = {}
        self.activities: list[dict[str, Any]] = []
        self.activity_lag = 0  # the newest N fill activities are not listed yet
        self.positions: dict[str, Decimal] = {}
        self.faults = Faults()
        self.requests: list[Recorded] = []
        self.listeners: set[WebSocket] = set()
        self.stream_connections = 0
        self._sequence = 0
        self.app = Starlette(
            routes=[
                Route("/v2/orders", self._submit, methods=["POST"]),
                Route("/v2/orders:by_client_order_id", self._by_client_id, methods=["GET"]),
                Route("/v2/orders/{order_id}", self._order, methods=["GET", "DELETE"]),
                Route("/v2/positions", self._positions, methods=["GET"]),
                Route("/v2/account", self._account, methods=["GET"]),
                Route("/v2/account/activities/{activity_type}", self._activities, methods=["GET"]),
                WebSocketRoute("/stream", self._stream),
            ]
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self.last_update: dict[str, Any] = {}

    # -- what tests look at -------------------------------------------------------------------

    def posts(self) -> list[Recorded]:
        return [r for r in self.requests if r.route == "submit"]

    def order(self, client_order_id: str) -> dict[str, Any]:
        return self.orders[self.by_client_id[client_order_id]]

    # -- HTTP ---------------------------------------------------------------------------------

    async def _serve(
        self, request: Request, route: str, normal: Callable[[Recorded], Awaitable[Response]]
    ) -> Response:
        seen = await recorded(request, route)
        self.requests.append(seen)
        if (
            request.headers.get("APCA-API-KEY-ID") != self.api_key
            or request.headers.get("APCA-API-SECRET-KEY") != self.secret_key
        ):
            return _error(401, 40110000, "request is not authorized")
        return await apply_fault(self.faults.take(route), lambda: normal(seen), _fault_error)

    async def _submit(self, request: Request) -> Response:
        async def place(seen: Recorded) -> Response:
            return await self._place(seen.body if isinstance(seen.body, dict) else {})

        return await self._serve(request, "submit", place)

    async def _place(self, data: dict[str, Any]) -> Response:
        symbol = data.get("symbol")
        if symbol not in self.prices:
            return _error(422, 40010001, f'asset "{symbol}" not found')
        try:
            qty = Decimal(str(data.get("qty")))
        except ArithmeticError:
            return _error(422, 40010001, "qty is invalid")
        kind, tif, side = data.get("type"), data.get("time_in_force"), data.get("side")
        if qty <= 0 or kind not in ORDER_TYPES or tif not in TIME_IN_FORCE:
            return _error(422, 40010001, "invalid order request")
        if side not in ("buy", "sell"):
            return _error(422, 40010001, "side must be buy or sell")
        limit = data.get("limit_price")
        stop = data.get("stop_price")
        if (kind in ("limit", "stop_limit")) != (limit is not None):
            return _error(422, 40010001, "limit_price is required for limit orders only")
        if (kind in ("stop", "stop_limit")) != (stop is not None):
            return _error(422, 40010001, "stop_price is required for stop orders only")
        client_order_id = data.get("client_order_id") or str(uuid4())
        if client_order_id in self.by_client_id:
            return _error(422, 40010001, "client_order_id must be unique")
        reference = Decimal(str(limit or stop or self.prices[symbol]))
        if side == "buy" and qty * reference > self.cash:
            return _error(403, 40310000, "insufficient buying power")
        now = _now()
        order: dict[str, Any] = {
            "id": str(uuid4()),
            "client_order_id": client_order_id,
            "created_at": now,
            "updated_at": now,
            "submitted_at": now,
            "filled_at": None,
            "expired_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": str(uuid4()),
            "symbol": symbol,
            "asset_class": "us_equity",
            "notional": None,
            "qty": _text(qty),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": "",
            "order_type": kind,
            "type": kind,
            "side": side,
            "time_in_force": tif,
            "limit_price": None if limit is None else str(limit),
            "stop_price": None if stop is None else str(stop),
            "status": "accepted",
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }
        self.orders[order["id"]] = order
        self.by_client_id[client_order_id] = order["id"]
        answer = json_response(dict(order))
        order["status"] = "new"  # routed: the stream says so right after the answer
        task = asyncio.get_running_loop().create_task(self.publish("new", order))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return answer

    async def _by_client_id(self, request: Request) -> Response:
        async def find(seen: Recorded) -> Response:
            order_id = self.by_client_id.get(request.query_params.get("client_order_id", ""))
            if order_id is None:
                return _error(404, 40410000, "order not found")
            return json_response(self.orders[order_id])

        return await self._serve(request, "by_client_order_id", find)

    async def _order(self, request: Request) -> Response:
        order_id = request.path_params["order_id"]
        route = "cancel" if request.method == "DELETE" else "get_order"

        async def answer(seen: Recorded) -> Response:
            order = self.orders.get(order_id)
            if order is None:
                return _error(404, 40410000, "order not found")
            if request.method == "GET":
                return json_response(order)
            if order["status"] not in OPEN:
                return _error(422, 42210000, f'order is already in "{order["status"]}" state')
            await self.close_order(order, "canceled")
            return Response(status_code=204)

        return await self._serve(request, route, answer)

    async def _positions(self, request: Request) -> Response:
        async def answer(seen: Recorded) -> Response:
            return json_response(
                [
                    {
                        "asset_id": str(uuid4()),
                        "symbol": symbol,
                        "exchange": "NASDAQ",
                        "asset_class": "us_equity",
                        "avg_entry_price": str(self.prices.get(symbol, Decimal(1))),
                        "qty": _text(qty),
                        "qty_available": _text(qty),
                        "side": "long" if qty > 0 else "short",
                        "market_value": _text(qty * self.prices.get(symbol, Decimal(1))),
                    }
                    for symbol, qty in sorted(self.positions.items())
                    if qty != 0
                ]
            )

        return await self._serve(request, "positions", answer)

    async def _account(self, request: Request) -> Response:
        async def answer(seen: Recorded) -> Response:
            equity = self.cash + sum(
                (
                    qty * self.prices.get(symbol, Decimal(1))
                    for symbol, qty in self.positions.items()
                ),
                Decimal(0),
            )
            return json_response(
                {
                    "id": "4d9c7a1e-0000-4000-8000-000000000001",
                    "account_number": "PA3FAKE00001",
                    "status": "ACTIVE",
                    "currency": "USD",
                    "cash": _text(self.cash),
                    "buying_power": _text(self.cash * 2),
                    "equity": _text(equity),
                    "portfolio_value": _text(equity),
                    "pattern_day_trader": False,
                    "trading_blocked": False,
                    "transfers_blocked": False,
                    "account_blocked": False,
                    "created_at": "2024-01-02T15:00:00Z",
                }
            )

        return await self._serve(request, "account", answer)

    async def _activities(self, request: Request) -> Response:
        async def answer(seen: Recorded) -> Response:
            if request.path_params["activity_type"] != "FILL":
                return json_response([])
            listed = self.activities[: len(self.activities) - self.activity_lag]
            query = request.query_params
            if "after" in query:
                after = datetime.fromisoformat(query["after"])
                listed = [
                    a for a in listed if datetime.fromisoformat(a["transaction_time"]) > after
                ]
            if query.get("direction", "desc") == "desc":
                listed = listed[::-1]
            token = query.get("page_token")
            if token is not None:
                ids = [a["id"] for a in listed]
                listed = listed[ids.index(token) + 1 :] if token in ids else []
            size = min(int(query.get("page_size", "100")), 100)
            return json_response(listed[:size])

        return await self._serve(request, "activities", answer)

    # -- what tests make happen ---------------------------------------------------------------

    async def fill(
        self,
        client_order_id: str,
        qty: str | Decimal,
        price: str | Decimal,
        *,
        drop_first: bool = False,
    ) -> dict[str, Any]:
        """Execute `qty` at `price`: order, fill history, position, and a trade update (lost
        if `drop_first` closes every stream connection before it is sent)."""
        order = self.order(client_order_id)
        qty, price = Decimal(qty), Decimal(price)
        before = Decimal(order["filled_qty"])
        average = Decimal(order["filled_avg_price"] or 0)
        filled = before + qty
        if filled > Decimal(order["qty"]):
            raise ValueError("overfill")
        now = _now()
        order["filled_qty"] = _text(filled)
        order["filled_avg_price"] = _text((before * average + qty * price) / filled)
        order["status"] = "filled" if filled == Decimal(order["qty"]) else "partially_filled"
        order["updated_at"] = now
        if order["status"] == "filled":
            order["filled_at"] = now
        sign = 1 if order["side"] == "buy" else -1
        self.positions[order["symbol"]] = (
            self.positions.get(order["symbol"], Decimal(0)) + sign * qty
        )
        self.cash -= sign * qty * price
        self._sequence += 1
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
        self.activities.append(
            {
                "id": f"{stamp}{self._sequence:03d}::{uuid4()}",
                "activity_type": "FILL",
                "transaction_time": now,
                "type": "fill" if order["status"] == "filled" else "partial_fill",
                "price": _text(price),
                "qty": _text(qty),
                "side": order["side"],
                "symbol": order["symbol"],
                "leaves_qty": _text(Decimal(order["qty"]) - filled),
                "order_id": order["id"],
                "cum_qty": _text(filled),
                "order_status": order["status"],
            }
        )
        if drop_first:
            await self.drop_streams()
        await self.publish(
            "fill" if order["status"] == "filled" else "partial_fill",
            order,
            timestamp=now,
            execution_id=str(uuid4()),
            price=_text(price),
            qty=_text(qty),
            position_qty=_text(self.positions[order["symbol"]]),
        )
        return order

    async def close_order(self, order: dict[str, Any], status: str) -> None:
        """Cancel, expire or reject an open order, with its trade update."""
        order["status"] = status
        order["updated_at"] = _now()
        stamp = {"canceled": "canceled_at", "expired": "expired_at", "rejected": "failed_at"}
        order[stamp[status]] = order["updated_at"]
        await self.publish(status, order)

    async def publish(self, event: str, order: dict[str, Any], **fields: Any) -> None:
        """Send one trade update to every listening connection (kept as `last_update`)."""
        self.last_update = {"event": event, "timestamp": _now(), "order": dict(order), **fields}
        await self.send_update(self.last_update)

    async def send_update(self, data: Any) -> None:
        frame = json.dumps({"stream": "trade_updates", "data": data}).encode()
        for ws in list(self.listeners):
            try:
                await ws.send_bytes(frame)
            except Exception:
                self.listeners.discard(ws)

    async def drop_streams(self) -> None:
        """Close every stream connection abnormally (1011), as a failing server would."""
        for ws in list(self.listeners):
            self.listeners.discard(ws)
            try:
                await ws.close(code=1011)
            except Exception:
                pass

    # -- the trade_updates websocket ----------------------------------------------------------

    async def _receive(self, ws: WebSocket) -> dict[str, Any]:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        raw = message.get("text") or (message.get("bytes") or b"").decode()
        parsed = json.loads(raw)
        return parsed if isinstance(parsed, dict) else {}

    async def _stream(self, ws: WebSocket) -> None:
        await ws.accept()
        try:
            auth = await self._receive(ws)
            data = auth.get("data") or {}
            key = data.get("key_id", auth.get("key"))
            secret = data.get("secret_key", auth.get("secret"))
            ok = auth.get("action") in ("authenticate", "auth") and (key, secret) == (
                self.api_key,
                self.secret_key,
            )
            status = "authorized" if ok else "unauthorized"
            reply = {
                "stream": "authorization",
                "data": {"action": "authenticate", "status": status},
            }
            await ws.send_bytes(json.dumps(reply).encode())
            if not ok:
                await ws.close(code=1008)
                return
            while True:
                message = await self._receive(ws)
                if message.get("action") != "listen":
                    continue
                streams = [
                    s
                    for s in (message.get("data") or {}).get("streams", [])
                    if s == "trade_updates"
                ]
                listening = {"stream": "listening", "data": {"streams": streams}}
                await ws.send_bytes(json.dumps(listening).encode())
                if streams:
                    self.listeners.add(ws)
                    self.stream_connections += 1
                else:
                    self.listeners.discard(ws)
        except WebSocketDisconnect:
            pass
        finally:
            self.listeners.discard(ws)
