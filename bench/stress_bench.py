"""The seed's stress case: 1,000 market orders, 100 in flight at once, through the signed
API of a running `make up` stack, with exact cash at the end.

    .venv/bin/python bench/stress_bench.py [--orders 1000] [--concurrency 100]
                                           [--api-workers 1] [--seed 12]

Runs `trading up` in a temporary DATA_DIR on free ports (rate limits and the per-address
connection cap raised for one client placing many orders; API_WORKERS as given), enlarges
the default portfolio (10,000,000 USD, limits that 1,000 round lots cannot reach) before
the first order, then runs `--concurrency` closed loops: each places a market order (1 to
5 shares of one of eight symbols; a sell only of shares already bought and filled, else a
buy) and waits for its fill, seen on GET /api/v1/events, before placing the next.

Checks, each a failure when broken: every order filled (no refusal, no error, no timeout);
the portfolio's cash moved by exactly the sum of the fills the API reported (notional to
the cent, minus commissions) and each position holds the net filled shares.

Reports orders/s (first POST to last fill), POST /orders p50/p95/p99 (until risk has
accepted), start -> filled p50/p95 (the client's clock before POST to the order's
`filled_at`; one machine, one clock), and the peak memory of each process of the stack
(RSS and PSS, sampled every 0.5 s): `trading up`, the worker, the API (each process when
API_WORKERS > 1), Temporal, and PostgreSQL (the postmaster and all its backends summed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import asyncpg
import httpx
from stack_bench import rate_limits, trading_up, up_env  # bench/, this script's folder

from activities.store.postgres import free_port
from api.client import AsyncTradingClient, TradingApiError
from api.schemas import OrderPublic
from domain.values import round_cents

SYMBOLS = ("AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "JPM", "INTC", "PFE")
CAPITAL = Decimal("10000000.00")
TERMINAL_EVENTS = {"fill", "canceled", "expired", "rejected"}
FILL_TIMEOUT = 120.0


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB from smaps_rollup; (0, 0) once the process is gone."""
    rss = pss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def children_of(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    return [int(p) for p in out.split()]


def stack_processes(data: Path) -> dict[str, list[int]]:
    """Each process of the stack by name; PostgreSQL is the postmaster and its backends."""
    stack = json.loads((data / "stack.json").read_text())
    found: dict[str, list[int]] = {}
    for name in ("up", "worker", "temporal"):
        if stack.get(name):
            found[name] = [stack[name]]
    if stack.get("api"):
        found["api"] = [stack["api"]]
        for n, child in enumerate(children_of(stack["api"]), 1):
            with contextlib.suppress(OSError):
                if b"resource_tracker" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found["api (mp tracker)"] = [child]
                    continue
            found[f"api process {n}"] = [child]
    with contextlib.suppress(OSError, ValueError, IndexError):
        postmaster = int((data / "pgdata" / "postmaster.pid").read_text().split()[0])
        found["postgresql (all)"] = [postmaster, *children_of(postmaster)]
    return found


@dataclass
class Peaks:
    rss: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    pss: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    async def sample(self, data: Path) -> None:
        while True:
            for name, pids in (await asyncio.to_thread(stack_processes, data)).items():
                sizes = [memory_kib(pid) for pid in pids]
                self.rss[name] = max(self.rss[name], max(r for r, _ in sizes))
                self.pss[name] = max(self.pss[name], sum(p for _, p in sizes))
            await asyncio.sleep(0.5)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))]


class Fills:
    """GET /api/v1/events, followed from the moment the stream answers: each order's
    terminal event (its JSON as then), and how many orders filled in parts."""

    def __init__(self) -> None:
        self.final: dict[UUID, tuple[str, OrderPublic]] = {}
        self.partial: set[UUID] = set()
        self.waiters: dict[UUID, asyncio.Future[tuple[str, OrderPublic]]] = {}

    def waiter(self, order_id: UUID) -> asyncio.Future[tuple[str, OrderPublic]]:
        future = self.waiters.get(order_id)
        if future is None:
            future = self.waiters[order_id] = asyncio.get_running_loop().create_future()
            if order_id in self.final:
                future.set_result(self.final[order_id])
        return future

    async def follow(self, response: httpx.Response) -> None:
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
                continue
            if "data" in fields:
                order = OrderPublic.model_validate_json(fields["data"])
                event = fields.get("event", "")
                if event == "partial_fill":
                    self.partial.add(order.order_id)
                elif event in TERMINAL_EVENTS and order.order_id not in self.final:
                    self.final[order.order_id] = (event, order)
                    future = self.waiters.get(order.order_id)
                    if future is not None and not future.done():
                        future.set_result((event, order))
            fields = {}


async def enlarge_portfolio(database_url: str, portfolio_id: UUID) -> None:
    """Before any order: capital and limits that 1,000 round lots of these names cannot
    reach (the stack's default portfolio is sized for a first user's few round lots)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE portfolios SET initial_capital = $2, cash_balance = $2, "
            "day_start_equity = $2, max_position_size = $2, max_order_notional = $2, "
            "max_concentration = 1, max_positions = 100, daily_loss_limit = $2 WHERE id = $1",
            portfolio_id,
            CAPITAL,
        )
    finally:
        await conn.close()


async def main(orders: int, concurrency: int, api_workers: int, seed: int) -> int:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "state"
        env = up_env(
            data,
            free_port(),
            API_WORKERS=str(api_workers),
            WORKER_METRICS_PORT="0",
            API_MAX_CONNECTIONS_PER_CLIENT=str(4 * concurrency + 50),
            API_RATE_LIMITS=rate_limits(
                100000, "place_order", "get_positions", "cancel_order", "get_market_data"
            ),
        )
        async with trading_up(env, poll_every=0.2, stop_timeout=90):
            credentials = json.loads((data / "credentials.json").read_text())
            portfolio_id = UUID(credentials["portfolio_id"])
            await enlarge_portfolio(credentials["database_url"], portfolio_id)
            return await stress(data, orders, concurrency, api_workers, rng)


async def stress(
    data: Path, orders: int, concurrency: int, api_workers: int, rng: random.Random
) -> int:
    client = AsyncTradingClient.from_credentials(
        data / "credentials.json",
        timeout=60.0,
        # Reuse a kept-alive connection only well inside the server's keep-alive timeout
        # (API_KEEPALIVE_TIMEOUT_SECONDS, 5 s): at the same 5 s a POST can meet the close.
        limits=httpx.Limits(
            max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=2.0
        ),
    )
    events_http = httpx.AsyncClient(base_url=client.api_url, auth=client.auth, timeout=None)
    peaks = Peaks()
    sampler = asyncio.create_task(peaks.sample(data))
    fills = Fills()
    before = await client.get_portfolio()
    async with events_http.stream("GET", "/api/v1/events") as stream:
        assert stream.status_code == 200, stream.status_code
        follower = asyncio.create_task(fills.follow(stream))
        available: dict[str, Decimal] = defaultdict(Decimal)
        posts: list[float] = []
        to_fill: list[float] = []
        errors: list[str] = []
        placed: list[tuple[str, OrderPublic]] = []
        counter = iter(range(orders))

        async def loop() -> None:
            for _ in counter:
                symbol = rng.choice(SYMBOLS)
                quantity = Decimal(rng.randint(1, 5))
                side = "buy"
                if available[symbol] >= quantity and rng.random() < 0.5:
                    side = "sell"
                    available[symbol] -= quantity
                began_wall, began = time.time(), time.perf_counter()
                try:
                    order = await client.place_order(symbol, quantity, side)
                except (TradingApiError, httpx.HTTPError) as err:
                    errors.append(f"POST {side} {symbol}: {type(err).__name__}: {err}")
                    continue
                posts.append((time.perf_counter() - began) * 1000)
                try:
                    event, final = await asyncio.wait_for(
                        fills.waiter(order.order_id), FILL_TIMEOUT
                    )
                except TimeoutError:
                    errors.append(f"order {order.order_id} not terminal in {FILL_TIMEOUT} s")
                    continue
                placed.append((side, final))
                if event != "fill":
                    errors.append(f"order {order.order_id} {event}: {final.reject_reason}")
                    continue
                assert final.filled_at is not None
                to_fill.append((final.filled_at.timestamp() - began_wall) * 1000)
                if side == "buy":
                    available[symbol] += final.filled_quantity

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        follower.cancel()
    await events_http.aclose()
    await asyncio.sleep(1.0)  # a last memory sample after the run
    sampler.cancel()
    after = await client.get_portfolio()
    positions = {p.symbol: p.quantity for p in await client.get_positions()}
    await client.aclose()

    expected = Decimal(0)
    net: dict[str, Decimal] = defaultdict(Decimal)
    for side, order in placed:
        if order.average_fill_price is None:
            continue
        notional = round_cents(order.filled_quantity * order.average_fill_price)
        expected += (notional if side == "sell" else -notional) - order.commission
        net[order.symbol] += order.filled_quantity if side == "buy" else -order.filled_quantity
    moved = after.cash_balance - before.cash_balance
    net_held = {s: q for s, q in net.items() if q}
    filled = len(to_fill)
    sells = sum(1 for side, _ in placed if side == "sell")
    print(
        f"stress: {orders} market orders, {concurrency} in flight, API_WORKERS={api_workers}, "
        f"{len(SYMBOLS)} symbols ({filled - sells} buys, {sells} sells filled)"
    )
    print(f"  filled {filled}/{orders}, errors {len(errors)}, filled in parts {len(fills.partial)}")
    for line in errors[:10]:
        print(f"    {line}")
    print(f"  orders/s (first POST to last fill): {filled / elapsed:7.1f}   ({elapsed:.1f} s)")
    if posts:
        print(
            f"  POST /orders ms: p50 {statistics.median(posts):7.1f}  p95 "
            f"{percentile(posts, 0.95):7.1f}  p99 {percentile(posts, 0.99):7.1f}"
        )
    if to_fill:
        print(
            f"  start -> filled ms: p50 {statistics.median(to_fill):7.1f}  p95 "
            f"{percentile(to_fill, 0.95):7.1f}"
        )
    verdict = "EXACT" if moved == expected else "MISMATCH"
    print(f"  cash moved {moved:+f}, fills sum {expected:+f}: {verdict}")
    print(f"  positions {'match' if positions == net_held else 'MISMATCH'} the net fills")
    if positions != net_held:
        print(f"    API {positions}\n    fills {net_held}")
    print("  peak memory by process (RSS / PSS, MiB):")
    for name in sorted(peaks.pss):
        print(f"    {name:20s} {peaks.rss[name] / 1024:7.0f} / {peaks.pss[name] / 1024:7.0f}")
    print(f"    {'stack total (PSS)':20s} {sum(peaks.pss.values()) / 1024:17.0f}")
    ok = not errors and filled == orders and moved == expected and positions == net_held
    print("  RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=12)
    options = parser.parse_args()
    raise SystemExit(
        asyncio.run(main(options.orders, options.concurrency, options.api_workers, options.seed))
    )
