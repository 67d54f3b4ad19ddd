"""`trading up` from cold start to a ready API, and the memory of the whole stack idle and
under 50 concurrent orders.

    .venv/bin/python bench/stack_bench.py [--orders 50]

Runs `trading up` in a temporary DATA_DIR on free ports (the wheels are already installed,
so this is the time a returning user waits), then sums the proportional memory (PSS) of every
process of the stack: `trading up`, worker, API, the Temporal dev server and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from activities.store.postgres import free_port
from api.client import AsyncTradingClient

ROOT = Path(__file__).resolve().parents[1]


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (PostgreSQL's shared buffers, libraries) are
    divided among the processes sharing them, so the sum is the stack's real footprint."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def stack_pids(data: Path) -> list[int]:
    pids = [p for p in json.loads((data / "stack.json").read_text()).values() if p]
    postmaster = int((data / "pgdata" / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(postmaster)], capture_output=True, text=True
    ).stdout.split()
    return [*pids, postmaster, *map(int, children)]


def stack_mib(data: Path) -> float:
    return sum(pss_kib(pid) for pid in stack_pids(data)) / 1024


def up_env(data: Path, api_port: int, **settings: str) -> dict[str, str]:
    """The environment of `trading up` in DATA_DIR `data`, the API on `api_port`, Temporal
    on free ports, its own PostgreSQL (never an outside DATABASE_URL), and `settings`."""
    env = {
        **os.environ,
        "DATA_DIR": str(data),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "TEMPORAL_UI_PORT": str(free_port()),
        "API_PORT": str(api_port),
        **settings,
    }
    env.pop("DATABASE_URL", None)
    return env


def rate_limits(max_requests: int, *endpoints: str) -> str:
    """API_RATE_LIMITS of `max_requests` a second for each of `endpoints`."""
    return json.dumps({k: {"max_requests": max_requests, "window_seconds": 1} for k in endpoints})


@contextlib.asynccontextmanager
async def trading_up(
    env: dict[str, str],
    poll_every: float,
    stop_timeout: float,
    ready_within: float | None = None,
    request_timeout: float = 5.0,
) -> AsyncIterator[str]:
    """Run `trading up` in `env` (see up_env) and yield the API's URL once /ready answers
    200 (polled every `poll_every` s, each request given `request_timeout` s; a failure if
    not ready `ready_within` s after starting, when given); on exit SIGINT, then wait up to
    `stop_timeout` s."""
    up = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "up"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{env['API_PORT']}"
    try:
        async with httpx.AsyncClient(timeout=request_timeout) as http:
            deadline = None if ready_within is None else time.monotonic() + ready_within
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{url}/ready")).status_code == 200:
                        break
                assert up.poll() is None, "trading up exited"
                assert deadline is None or time.monotonic() < deadline, (
                    f"trading up was not ready in {ready_within:.0f} s"
                )
                await asyncio.sleep(poll_every)
        yield url
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=stop_timeout)


async def main(orders: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "state"
        env = up_env(
            data, free_port(), API_RATE_LIMITS=rate_limits(10000, "place_order", "get_positions")
        )
        began = time.perf_counter()
        async with trading_up(env, poll_every=0.1, stop_timeout=60):
            ready = time.perf_counter() - began
            print(f"make up -> ready API: {ready:.1f} s (wheels installed, fresh data dir)")
            await asyncio.sleep(10)
            print(f"memory idle:          {stack_mib(data):7.0f} MiB PSS")
            client = AsyncTradingClient.from_credentials(data / "credentials.json")
            peak = 0.0

            async def sample() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, stack_mib(data))
                    await asyncio.sleep(0.2)

            sampler = asyncio.create_task(sample())
            placed = await asyncio.gather(
                *(client.place_order("AAPL", "1", "buy") for _ in range(orders))
            )
            while True:
                states = [(await client.get_order(p.order_id)).status for p in placed]
                if all(s == "filled" for s in states):
                    break
                await asyncio.sleep(0.5)
            sampler.cancel()
            print(f"memory under {orders} concurrent orders: {peak:7.0f} MiB PSS (peak)")
            await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=50)
    asyncio.run(main(parser.parse_args().orders))
