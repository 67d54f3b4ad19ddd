"""The whole stack as a user runs it: `trading up` in a temporary directory, orders through
the signed API, then SIGKILL of every process mid-order and a restart that finishes every
order exactly once."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal as D
from pathlib import Path

import asyncpg
import pytest

from activities.store.postgres import free_port
from api.client import TradingClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


class Stack:
    def __init__(self, data: Path) -> None:
        self.data = data
        ports = {name: free_port() for name in ("temporal", "ui", "api")}
        self.env = {
            **os.environ,
            "DATA_DIR": str(data),
            "TEMPORAL_ADDRESS": f"127.0.0.1:{ports['temporal']}",
            "TEMPORAL_UI_PORT": str(ports["ui"]),
            "API_PORT": str(ports["api"]),
            "API_RATE_LIMITS": json.dumps(
                {
                    name: {"max_requests": 1000, "window_seconds": 1}
                    for name in ("place_order", "cancel_order", "get_positions")
                }
            ),
            "ORDER_POLL_INTERVAL_SECONDS": "2",
        }
        self.env.pop("DATABASE_URL", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> dict:
        log = open(self.data / "up.out", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "up"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while not (self.data / "logs" / "api.log").exists() or not self._api_up():
            assert self.process.poll() is None, (self.data / "up.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "trading up did not become ready"
            time.sleep(0.3)
        return json.loads((self.data / "credentials.json").read_text())

    def _api_up(self) -> bool:
        with contextlib.suppress(Exception):
            credentials = json.loads((self.data / "credentials.json").read_text())
            import httpx

            return httpx.get(credentials["api_url"] + "/health", timeout=1).status_code == 200
        return False

    def kill_everything(self) -> None:
        """SIGKILL, no warning: `trading up`, worker, API, Temporal and PostgreSQL."""
        pids = list(json.loads((self.data / "stack.json").read_text()).values())
        postmaster = self.data / "pgdata" / "postmaster.pid"
        if postmaster.exists():
            pids.append(int(postmaster.read_text().split()[0]))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill_everything()


def database_url(data: Path) -> str:
    password = (data / "pgdata" / "postgres.password").read_text().strip()
    port = int((data / "pgdata" / "postmaster.pid").read_text().splitlines()[3])
    return f"postgresql://postgres:{password}@127.0.0.1:{port}/trading"


async def wait_all_terminal(client: TradingClient, ids: list[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        orders = {i: await asyncio.to_thread(client.get_order, i) for i in ids}
        if all(o.status in ("filled", "canceled", "expired", "rejected") for o in orders.values()):
            return orders
        assert time.monotonic() < deadline, {i: o.status for i, o in orders.items()}
        await asyncio.sleep(0.5)


async def test_trading_up_places_fills_and_cancels_and_survives_sigkill(tmp_path):
    stack = Stack(tmp_path / "state")
    stack.data.mkdir()
    try:
        credentials = stack.start()
        client = TradingClient.from_credentials(stack.data / "credentials.json")

        placed = client.place_order(symbol="AAPL", quantity="1", side="buy")
        assert placed.status in ("accepted", "submitted", "partially_filled", "filled")
        resting = client.place_order(
            symbol="MSFT",
            quantity="1",
            side="buy",
            order_type="limit",
            limit_price="1.00",
            time_in_force="gtc",
        )
        first = await wait_all_terminal(client, [str(placed.order_id)], timeout=60)
        assert first[str(placed.order_id)].status == "filled"
        canceled = client.cancel_order(resting.order_id)
        assert canceled.status == "canceled"

        # A burst of market orders, then every process dies at once, mid-flight.
        burst = [
            str(client.place_order(symbol=symbol, quantity="1", side="buy").order_id)
            for symbol in ("AAPL", "MSFT", "NVDA", "SPY", "QQQ", "META")
        ]
        stack.kill_everything()

        credentials_again = stack.start()
        assert credentials_again["api_key"] == credentials["api_key"]
        client = TradingClient.from_credentials(stack.data / "credentials.json")
        orders = await wait_all_terminal(client, burst, timeout=120)
        assert {o.status for o in orders.values()} == {"filled"}

        conn = await asyncpg.connect(database_url(stack.data))
        try:
            per_order = await conn.fetch(
                "SELECT o.id, o.quantity, o.filled_quantity, count(e.*) AS fills,"
                " coalesce(sum(e.quantity), 0) AS executed"
                " FROM orders o LEFT JOIN executions e ON e.order_id = o.id"
                " GROUP BY o.id"
            )
            for row in per_order:
                assert row["executed"] == row["filled_quantity"] <= row["quantity"]
            venue = await conn.fetchval("SELECT count(*) FROM venue_orders")
            assert venue == len(burst) + 2  # each order reached the venue exactly once
            reserved = await conn.fetchval("SELECT coalesce(sum(amount), 0) FROM reservations")
            assert reserved == D(0)
        finally:
            await conn.close()
        portfolio = client.get_portfolio()
        assert D(portfolio.cash_balance) < D("100000")
    finally:
        stack.stop()
