"""Time one PaperVenue.match_once pass over 100 working orders (embedded PostgreSQL).

.venv/bin/python bench/venue_bench.py
"""

import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from activities.calendar.sessions import MarketSessions  # noqa: E402
from activities.market_data.simulated import SimulatedFeed  # noqa: E402
from activities.store.migrations import migrate_up  # noqa: E402
from activities.store.postgres import create_pool  # noqa: E402
from activities.venue.exchange import PaperVenue  # noqa: E402
from contracts.payloads import OrderRequest  # noqa: E402
from domain.commissions import PerShare  # noqa: E402
from domain.orders import OrderSide, OrderType, TimeInForce  # noqa: E402
from tests.fakes.feeds import ScriptedFeed  # noqa: E402
from tests.fixtures.postgres import start_throwaway_server, stop_throwaway_server  # noqa: E402

N, ROUNDS = 100, 7
SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "TSLA", "META", "SPY", "QQQ"]


class Clock:
    def __init__(self):
        self.now = datetime(2026, 1, 15, 15, 0, tzinfo=UTC)

    def __call__(self):
        return self.now


def req(symbol, order_type=OrderType.MARKET, limit=None):
    return OrderRequest(
        uuid4(),
        uuid4(),
        "b",
        symbol,
        OrderSide.BUY,
        Decimal("100"),
        order_type,
        TimeInForce.GTC,
        limit,
        None,
    )


async def timed(venue):
    t = time.perf_counter()
    events = await venue.match_once()
    return (time.perf_counter() - t) * 1000, events


async def main():
    server = await start_throwaway_server()
    try:
        pool = await create_pool(server.url, min_size=2, max_size=10)
        async with pool.acquire() as conn:
            await migrate_up(conn)
        clock = Clock()
        scripted = ScriptedFeed(clock=clock)
        scripted.set_quote("AAPL", "199.90", "200.00", ask_size=1000)
        sessions = MarketSessions("always_open")
        scenarios = {
            "100 market orders, all fill (ScriptedFeed, 1 symbol)": (scripted, "fill"),
            "100 resting limits, none marketable (ScriptedFeed)": (scripted, "rest"),
            "100 market orders, all fill (SimulatedFeed, 9 symbols)": (
                SimulatedFeed(clock=clock),
                "fill9",
            ),
        }
        for name, (feed, kind) in scenarios.items():
            await pool.execute(
                "DELETE FROM venue_outbox; DELETE FROM venue_executions; DELETE FROM venue_orders"
            )
            venue = PaperVenue(pool, feed, sessions, PerShare(), clock=clock)
            times = []
            if kind == "rest":
                for _ in range(N):
                    await venue.submit(req("AAPL", OrderType.LIMIT, Decimal("150.00")))
            for _ in range(ROUNDS):
                if kind != "rest":
                    for i in range(N):
                        await venue.submit(req(SYMBOLS[i % 9] if kind == "fill9" else "AAPL"))
                clock.now += timedelta(seconds=1)
                if feed is scripted:
                    scripted.set_quote("AAPL", "199.90", "200.00", ask_size=1000)
                ms, events = await timed(venue)
                assert events == (N if kind != "rest" else 0), events
                times.append(ms)
            print(
                f"{name}: median {statistics.median(times):.1f} ms, "
                f"min {min(times):.1f}, max {max(times):.1f} ms over {ROUNDS} passes"
            )
        await pool.close()
    finally:
        await stop_throwaway_server(server)


asyncio.run(main())
