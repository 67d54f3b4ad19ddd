"""PostgreSQL outages under a running `trading api` process (issue 13, item 3).

A real `trading api` subprocess on a throwaway PostgreSQL and a Temporal dev server. While
PostgreSQL is frozen (SIGSTOP of the postmaster and every backend) and then killed
(SIGKILL), /ready, GET /api/v1/portfolio and POST /api/v1/orders must answer 503
SERVICE_UNAVAILABLE with Retry-After while the outage lasts: the outage is only lifted
after every answer is in, so a request that waited for PostgreSQL would never answer
(the client's timeout, far above the API's 2 s budget, then fails the test). Nothing
answers 500, the API log holds no traceback per request, and after PostgreSQL is back
the same requests succeed again. Times are printed (pytest -s), never asserted; the
bound is measured by bench/abuse.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from activities.store import keys as api_keys
from activities.store import ledger
from activities.store.migrations import migrate_up
from activities.store.postgres import LocalPostgres, create_pool, free_port
from api.signing import signed_headers
from domain.portfolio import Portfolio, RiskLimits
from tests.fixtures import pg_outage
from tests.fixtures.postgres import start_throwaway_server, stop_throwaway_server
from worker.devserver import DevServer, die_with_parent

pytestmark = pytest.mark.integration

CLIENT_TIMEOUT = 15.0  # far above the API's budget: a hang shows as a failure, not a pass
PASSED_ENV = frozenset({"PATH", "HOME", "USER", "LANG", "TZ", "TMPDIR", "PYTHONPATH"})
LIMITS = RiskLimits(
    max_position_size=Decimal("25000"),
    max_order_notional=Decimal("25000"),
    max_concentration=Decimal("0.5"),
    max_positions=20,
    daily_loss_limit=Decimal("5000"),
)


@dataclass
class LiveApi:
    """A `trading api` process, its PostgreSQL and Temporal, a portfolio and a key."""

    url: str
    key_id: str
    secret: str
    process: subprocess.Popen[bytes]
    log: Path
    pg: LocalPostgres
    pg_port: int
    paused: list[int]

    def freeze_postgres(self) -> None:
        pg_outage.freeze(pg_outage.postmaster_pid(self.pg.data_dir), self.paused.append)

    def thaw_postgres(self) -> None:
        pg_outage.send(reversed(self.paused), signal.SIGCONT)
        self.paused.clear()

    def kill_postgres(self) -> None:
        postmaster = pg_outage.postmaster_pid(self.pg.data_dir)
        pg_outage.send(pg_outage.descendants(postmaster), signal.SIGKILL)

    async def restart_postgres(self) -> None:
        self.pg = LocalPostgres(self.pg.data_dir, port=self.pg_port, durable=False)
        await asyncio.wait_for(self.pg.start(), timeout=60)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def signed(
        self, http: httpx.AsyncClient, method: str, target: str, body: Any = None
    ) -> httpx.Response:
        content = b"" if body is None else json.dumps(body).encode()
        headers = signed_headers(
            self.key_id, self.secret, method, target, content, int(time.time())
        )
        if body is not None:
            headers["Content-Type"] = "application/json"
        return await http.request(method, self.url + target, content=content, headers=headers)


async def spawn_api(
    base: Path, database_url: str, temporal_address: str, **env: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    data = base / "data"
    data.mkdir(exist_ok=True)
    log = base / f"api-{port}.log"
    environment = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
    environment.update(
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=temporal_address,
        DATA_DIR=str(data),
        API_HOST="127.0.0.1",
        API_PORT=str(port),
        API_MASTER_KEY=MASTER_KEY,
        PYTHONUNBUFFERED="1",
        **env,
    )
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "api"],
            env=environment,
            cwd=Path(__file__).resolve().parents[2],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            assert process.poll() is None, f"the API exited:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url + "/health")).status_code == 200:
                    return process, url, log
            assert time.monotonic() < deadline, f"the API did not start:\n{log.read_text()}"
            await asyncio.sleep(0.2)


MASTER_KEY = uuid.uuid4().hex + uuid.uuid4().hex


async def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait, 10)


@pytest.fixture
async def live_api(tmp_path: Path) -> AsyncIterator[LiveApi]:
    tmp_path.chmod(0o711)
    pg = await start_throwaway_server()
    temporal = DevServer(None, port=free_port(), ui_port=None, log_file=tmp_path / "temporal.log")
    process: subprocess.Popen[bytes] | None = None
    live: LiveApi | None = None
    try:
        await temporal.start()
        pool = await create_pool(pg.url, 1, 2)
        try:
            await migrate_up(pool)
            portfolio = Portfolio(
                name="outage", initial_capital=Decimal("100000.00"), limits=LIMITS
            )
            await ledger.create_portfolio(pool, portfolio)
            key_id, secret = await api_keys.create_key(pool, portfolio.id, MASTER_KEY.encode())
        finally:
            await pool.close()
        process, url, log = await spawn_api(tmp_path, pg.url, temporal.address)
        live = LiveApi(url, key_id, secret, process, log, pg, pg.port, [])
        yield live
    finally:
        if live is not None:
            live.thaw_postgres()
            pg = live.pg
        if process is not None:
            await stop_process(process)
        with contextlib.suppress(Exception):
            await temporal.stop()
        with contextlib.suppress(Exception):
            await stop_throwaway_server(pg)


def assert_unavailable(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE", error
    return dict(error)


async def timed(call: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    began = time.perf_counter()
    response = await call
    return response, time.perf_counter() - began


async def outage_answers(api: LiveApi, http: httpx.AsyncClient, label: str) -> None:
    """/ready, GET /portfolio and POST /orders, three of each at once: all 503."""
    order = {"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"}
    calls: list[Callable[[], Awaitable[httpx.Response]]] = []
    for _ in range(3):
        calls.append(lambda: http.get(api.url + "/ready"))
        calls.append(lambda: api.signed(http, "GET", "/api/v1/portfolio"))
        calls.append(
            lambda: api.signed(
                http, "POST", "/api/v1/orders", order | {"client_order_id": str(uuid.uuid4())}
            )
        )
    results = await asyncio.gather(*(timed(call()) for call in calls))
    for (response, _), kind in zip(results, ["ready", "portfolio", "order"] * 3, strict=True):
        error = assert_unavailable(response)
        if kind == "ready":
            assert "database" in error["details"]["down"], error
            assert "PostgreSQL" in error["message"], error
        else:
            assert error["details"]["dependency"] == "postgres", error
    slowest = max(elapsed for _, elapsed in results)
    print(f"\n{label}: 9 requests answered 503, slowest {slowest:.2f} s")


async def recovered(api: LiveApi, http: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 60
    while True:
        response = await api.signed(http, "GET", "/api/v1/portfolio")
        if response.status_code == 200:
            return
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, "the API did not recover"
        await asyncio.sleep(0.3)


async def test_postgres_frozen_then_killed_answers_503_never_hangs_nor_500(
    live_api: LiveApi,
) -> None:
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as http:
        assert (await live_api.signed(http, "GET", "/api/v1/portfolio")).status_code == 200

        live_api.freeze_postgres()
        await outage_answers(live_api, http, "frozen")
        await outage_answers(live_api, http, "frozen, again")  # a pool full of dead sessions
        live_api.thaw_postgres()
        await recovered(live_api, http)

        live_api.kill_postgres()
        await outage_answers(live_api, http, "killed")
        await live_api.restart_postgres()
        await recovered(live_api, http)
        ready = await http.get(live_api.url + "/ready")
        components = ready.json()["error"]["details"]["components"]
        assert components["database"]["status"] == "up", components  # (no worker: no venue)

    log = live_api.log_text()
    # One line per outage and count, never a traceback per request (36 answered 503), and
    # asyncpg's failed pool refills collapsed to one line without a traceback.
    assert "Traceback" not in log, log
    assert "unhandled error" not in log, log
    assert "postgres unavailable" in log, log
