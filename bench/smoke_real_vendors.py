"""By-hand smoke test of the real vendors: one small Alpaca paper order placed, watched and
canceled, and one Polygon quote read. Not run in CI; it needs real keys and the internet.

    ALPACA_API_KEY=... ALPACA_SECRET_KEY=... POLYGON_API_KEY=... \\
        .venv/bin/python bench/smoke_real_vendors.py [--symbol SPY]

The order is a DAY limit buy of one share at half the current bid, so it rests without
filling and is canceled at once. It runs against paper trading unless ALPACA_BASE_URL names
another endpoint, and refuses Alpaca's live endpoint without --live.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from decimal import ROUND_DOWN, Decimal
from uuid import uuid4

from activities.brokers.alpaca_rest import (
    LIVE_URL,
    PAPER_URL,
    AlpacaBroker,
    normalize_base_url,
    stream_url_for,
)
from activities.brokers.alpaca_stream import AlpacaTradeStream
from activities.market_data.polygon import DEFAULT_BASE_URL, PolygonMarketData
from contracts.payloads import BrokerEvent, OrderRequest
from domain.orders import OrderSide, OrderType, TimeInForce

REQUIRED = ("ALPACA_API_KEY", "ALPACA_SECRET_KEY", "POLYGON_API_KEY")


def refuse(message: str) -> None:
    print(f"smoke_real_vendors: {message}", file=sys.stderr)
    raise SystemExit(2)


async def wait_for_event(events: list[BrokerEvent], kinds: set[str], seconds: float) -> bool:
    for _ in range(int(seconds * 10)):
        if any(event.event.value in kinds for event in events):
            return True
        await asyncio.sleep(0.1)
    return False


async def main(symbol: str, live: bool) -> None:
    missing = [name for name in REQUIRED if not os.environ.get(name, "").strip()]
    if missing:
        refuse(f"set {', '.join(missing)} first (this script talks to the real vendors)")
    base_url = normalize_base_url(os.environ.get("ALPACA_BASE_URL") or PAPER_URL)
    if base_url == LIVE_URL and not live:
        refuse(f"ALPACA_BASE_URL is the live endpoint {LIVE_URL}; pass --live to really mean it")

    polygon = PolygonMarketData(
        os.environ["POLYGON_API_KEY"].strip(),
        base_url=os.environ.get("POLYGON_BASE_URL") or DEFAULT_BASE_URL,
    )
    quote = await polygon.get_quote(symbol)
    print(
        f"Polygon {symbol}: bid {quote.bid} x {quote.bid_size}, ask {quote.ask} x "
        f"{quote.ask_size}, last {quote.last} at {quote.timestamp.isoformat()}"
    )

    key, secret = os.environ["ALPACA_API_KEY"].strip(), os.environ["ALPACA_SECRET_KEY"].strip()
    broker = AlpacaBroker(key, secret, base_url)
    print(f"Alpaca {base_url}: ready={await broker.ready()} account={await broker.account()}")

    events: list[BrokerEvent] = []

    async def deliver(workflow_id: str, event: BrokerEvent) -> None:
        print(f"  stream -> {workflow_id}: {event.event.value} {event.execution_id or ''}")
        events.append(event)

    async def reconnected() -> None:
        print("  stream connected")

    stream = AlpacaTradeStream(key, secret, deliver, reconnected, url=stream_url_for(base_url))
    stop = asyncio.Event()
    listening = asyncio.create_task(stream.run(stop))
    try:
        for _ in range(100):
            if stream.connections:
                break
            await asyncio.sleep(0.1)
        limit = (quote.bid / 2).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
        request = OrderRequest(
            order_id=uuid4(),
            portfolio_id=uuid4(),
            client_order_id="smoke",
            symbol=symbol,
            side=OrderSide.BUY,
            quantity=Decimal(1),
            order_type=OrderType.LIMIT,
            time_in_force=TimeInForce.DAY,
            limit_price=limit,
        )
        client_order_id = str(request.order_id)
        result = await broker.submit(request)
        print(f"submitted {client_order_id}: broker order {result.broker_order_id}")
        # Outside market hours Alpaca holds the order as "accepted" and sends no "new".
        if not await wait_for_event(events, {"new"}, 10):
            print("  (no 'new' event within 10 s: the market is probably closed)")
        state = await broker.get_order(client_order_id)
        print(f"polled: {state.status.value}, filled {state.filled_quantity}")
        state = await broker.cancel(client_order_id)
        print(f"canceled: {state.status.value}")
        if await wait_for_event(events, {"canceled"}, 15):
            print("  the stream reported the cancel")
        else:
            print("  no 'canceled' event within 15 s", file=sys.stderr)
        final = await broker.get_order(client_order_id)
        print(f"final: {final.status.value}, executions {final.executions}")
    finally:
        stop.set()
        await listening


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbol", default="SPY")
    parser.add_argument("--live", action="store_true", help="allow Alpaca's live endpoint")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.symbol, arguments.live))
