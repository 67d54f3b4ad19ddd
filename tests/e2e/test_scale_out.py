"""Process-level faults on a scaled-out stack: one PostgreSQL, one Temporal dev server, two
`trading worker` and two `trading api` processes, all on 127.0.0.1 free ports, sharing one
portfolio and one API key (created as `trading up` creates them, worker/stack.py).

50 market orders (mixed buys and sells over five symbols) go through both APIs with the
signed client (api/client.py), in bursts, while one fault after the other hits the stack:

A. SIGKILL of the worker that runs the paper venue's matching loop, half a second into a
   burst; a replacement worker starts at once, as an orchestrator would start it.
B. The Temporal server paused for OUTAGE_SECONDS (SIGSTOP/SIGCONT of its process group).
C. PostgreSQL away for OUTAGE_SECONDS: stopped with pg_ctl (fast shutdown) and started again
   on the same data directory and port; with SCALE_OUT_PG_FAULT=freeze, SIGSTOP/SIGCONT of
   the postmaster and its backends instead. Not injected when DATABASE_URL names a server
   this test does not own (the orders of the phase then go through undisturbed).

Each outage phase: a burst of 12 orders, the fault, 4 more orders sent during the outage,
the restoration, a probe order; then every order so far must be terminal before the next
phase. A POST that gets a 5xx or no answer is retried with the same client_order_id on the
other API, as a client of a load-balanced deployment would.

Then nothing may be lost or doubled: every 201/200 (and 422) names exactly one order and
every order row was placed by a POST; every order is terminal (filled, or rejected by risk
with a code); the books equal the venue (status and filled quantity per order, executions
by execution id); cash moved by exactly the fills settled to the cent and the commissions;
the ledger balances, cash >= 0, no reservation is left, no order workflow still runs, the
venue outbox is fully delivered and both APIs are ready again.

Recovery times (from each restoration until the APIs answer 201/200 again, until a new
order fills, until every order of the phase is terminal) are printed and written to
<tmp_path>/scale_out.json with the logs' warnings (`pytest -s` shows them); measured,
never asserted.

Every wait has a deadline, the test body runs under OVERALL_TIMEOUT, and a watchdog thread
SIGKILLs every process the test started if even that does not end it. Process logs are
under <tmp_path>/logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from activities.store.migrations import migrate_up
from activities.store.postgres import LocalPostgres, create_pool, free_port
from activities.store.repositories import UnitOfWork
from api.client import AsyncTradingClient, TradingApiError
from bootstrap.settings import ApiSettings
from bootstrap.temporal import connect
from domain.values import round_cents
from tests.fixtures import pg_outage
from tests.fixtures.postgres import create_database, drop_database, random_database_name
from worker.devserver import DevServer, die_with_parent
from worker.stack import DEFAULT_CAPITAL, ensure_credentials, ensure_default_portfolio

pytestmark = pytest.mark.integration

# The spec's outages are 30 s; a shorter value (e.g. SCALE_OUT_OUTAGE_SECONDS=5) is for
# iterating on the test itself.
OUTAGE_SECONDS = float(os.environ.get("SCALE_OUT_OUTAGE_SECONDS", "30"))
PG_FAULT = os.environ.get("SCALE_OUT_PG_FAULT", "restart")  # "restart" or "freeze"
OVERALL_TIMEOUT = 240.0  # the test body; the watchdog kills everything 30 s after that
STARTUP_TIMEOUT = 90.0
PHASE_TIMEOUT = 75.0  # from a fault's restoration until every order so far is terminal
CLIENT_TIMEOUT = 20.0  # per HTTP request; the API answers 503 after 15 s without a decision
BURST_TO_FAULT = 0.5  # seconds between a burst's first POSTs and its fault

SYMBOLS = ("AAPL", "MSFT", "NVDA", "KO", "INTC")
TERMINAL = ("filled", "canceled", "expired", "rejected")
VENUE_STATUS = {
    "new": "submitted",
    "partially_filled": "partially_filled",
    "filled": "filled",
    "canceled": "canceled",
    "expired": "expired",
    "rejected": "rejected",
}
COMMISSION = '{"model": "per_share", "rate": "0.005", "minimum": "1.00"}'
TRADING = Path(sys.executable).parent / "trading"  # .venv/bin/trading
LEADER_LINE = "paper venue: this process now runs the matching loop"
WORKER_READY_LINE = "worker on task queue"
PASSED_ENV = frozenset(
    {"PATH", "HOME", "USER", "LANG", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV"}
)


# -- processes ----------------------------------------------------------------------------------


def _signal_group(pid: int | None, sig: signal.Signals) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


class Child:
    """A `trading <command>` process in its own session, its output in a log file. It gets
    SIGTERM if the test process dies (PR_SET_PDEATHSIG), so no run leaves one behind."""

    def __init__(self, name: str, command: str, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log = logs / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [str(TRADING)] if TRADING.exists() else [sys.executable, "-m", "worker.cli"]
        with open(self.log, "ab") as output:
            # Started from the event loop's thread (the main thread): PDEATHSIG follows the
            # thread that forked, so never from asyncio.to_thread.
            self.process = subprocess.Popen(
                [*argv, self.command],
                env=self.env,
                cwd=self.env["DATA_DIR"],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        _signal_group(self.pid, signal.SIGKILL)

    async def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        assert self.process is not None
        _signal_group(self.pid, signal.SIGCONT)
        _signal_group(self.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            await asyncio.to_thread(self.process.wait, 10)


async def until(
    what: str, check: Callable[[], Awaitable[Any]], timeout: float, every: float = 0.2
) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = await asyncio.wait_for(check(), timeout=max(2.0, every * 10))
            if result:
                return result
        except AssertionError:
            raise  # a check that knows it cannot succeed (a process exited)
        except Exception as err:  # the thing we wait for may be down meanwhile
            last_error = err
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s (last error: {last_error!r})")
        await asyncio.sleep(every)


# -- the stack ----------------------------------------------------------------------------------


class ScaleOutStack:
    """PostgreSQL + Temporal in this process (LocalPostgres, DevServer), 2 workers and 2 APIs
    as `trading` subprocesses; a portfolio and one API key both APIs accept."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.logs = base / "logs"
        self.data.mkdir(parents=True)
        self.logs.mkdir()
        base.chmod(0o711)  # as root, PostgreSQL runs as its own user and must reach pgdata
        self.external_url = os.environ.get("DATABASE_URL") or None
        self.pg: LocalPostgres | None = None
        self.pg_port = 0
        self.database_name: str | None = None
        self.url = ""
        self.temporal = DevServer(
            None, port=free_port(), ui_port=None, log_file=self.logs / "temporal.log"
        )
        self.master_key = uuid.uuid4().hex + uuid.uuid4().hex
        self.api_ports = [free_port(), free_port()]
        self.children: dict[str, Child] = {}
        self.killed: set[str] = set()  # children this test SIGKILLed on purpose
        self.pool: asyncpg.Pool | None = None
        self.credentials: dict[str, Any] = {}
        self.paused: set[int] = set()  # pids under SIGSTOP, continued on teardown whatever happens

    # PostgreSQL ------------------------------------------------------------------------------

    async def start_postgres(self) -> None:
        if self.external_url:
            self.database_name = random_database_name("trading_scale_out")
            self.url = await create_database(self.external_url, self.database_name)
            return
        self.pg = LocalPostgres(self.base / "pgdata", durable=False)
        self.url = await self.pg.start()
        self.pg_port = self.pg.port

    def postmaster_pid(self) -> int:
        assert self.pg is not None
        return pg_outage.postmaster_pid(self.pg.data_dir)

    async def stop_postgres(self) -> None:
        """Fast shutdown with pg_ctl (every session is ended)."""
        assert self.pg is not None
        await asyncio.wait_for(self.pg.stop(), timeout=60)

    async def start_postgres_again(self) -> None:
        """pg_ctl start on the same data directory and port."""
        assert self.pg is not None
        self.pg = LocalPostgres(self.pg.data_dir, port=self.pg_port, durable=False)
        await asyncio.wait_for(self.pg.start(), timeout=60)

    def freeze_postgres(self) -> None:
        pg_outage.freeze(self.postmaster_pid(), self.paused.add)

    def thaw(self) -> None:
        pg_outage.send(sorted(self.paused, reverse=True), signal.SIGCONT)
        self.paused.clear()

    # Temporal --------------------------------------------------------------------------------

    def pause_temporal(self) -> None:
        assert self.temporal.pid is not None
        self.paused.add(self.temporal.pid)
        _signal_group(self.temporal.pid, signal.SIGSTOP)

    def resume_temporal(self) -> None:
        _signal_group(self.temporal.pid, signal.SIGCONT)
        self.paused.discard(self.temporal.pid or 0)

    # the application -------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        # Only the basics from our environment: a developer's own settings (ALPACA_* keys
        # would replace the paper venue, ORDER_*, DB_POOL_*, ...) must not leak in.
        env = {k: v for k, v in os.environ.items() if k in PASSED_ENV or k.startswith("LC_")}
        env.update(
            DATABASE_URL=self.url,
            TEMPORAL_ADDRESS=self.temporal.address,
            DATA_DIR=str(self.data),
            API_HOST="127.0.0.1",
            API_MASTER_KEY=self.master_key,
            API_RATE_LIMITS=json.dumps(
                {
                    name: {"max_requests": 1000, "window_seconds": 1}
                    for name in ("place_order", "cancel_order", "get_positions")
                }
            ),
            COMMISSION=COMMISSION,
            MARKET_SESSION_MODE="always_open",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def spawn(self, name: str, command: str, **extra: str) -> Child:
        child = Child(name, command, self.env(**extra), self.logs)
        child.start()
        self.children[name] = child
        return child

    async def start(self) -> float:
        began = time.monotonic()
        await asyncio.gather(self.start_postgres(), self.temporal.start())
        self.pool = await create_pool(self.url, 0, 4, command_timeout=10)
        # As `trading up` does (worker/stack.py): schema, the default portfolio, a key.
        await migrate_up(self.pool)
        portfolio_id = await ensure_default_portfolio(self.pool, self.data / "credentials.json")
        settings = ApiSettings(
            data_dir=self.data,
            api_host="127.0.0.1",
            api_port=self.api_ports[0],
            api_master_key=SecretStr(self.master_key),
            database_url=self.url,
        )
        self.credentials = await ensure_credentials(self.pool, settings, portfolio_id, None)
        for n in (1, 2):
            self.spawn(f"worker-{n}", "worker")
        for n, port in enumerate(self.api_ports, start=1):
            self.spawn(f"api-{n}", "api", API_PORT=str(port))
        await asyncio.gather(
            *(self.worker_ready(f"worker-{n}") for n in (1, 2)),
            *(self.api_ready(url) for url in self.api_urls),
        )
        return time.monotonic() - began

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

    @property
    def portfolio_id(self) -> uuid.UUID:
        return uuid.UUID(self.credentials["portfolio_id"])

    async def worker_ready(self, name: str, timeout: float = STARTUP_TIMEOUT) -> None:
        child = self.children[name]

        async def ready() -> bool:
            assert child.alive(), f"{name} exited:\n{child.text()[-3000:]}"
            return WORKER_READY_LINE in child.text()

        await until(f"{name} ready", ready, timeout)

    async def api_ready(self, url: str, timeout: float = STARTUP_TIMEOUT) -> None:
        async with httpx.AsyncClient(timeout=3) as http:

            async def ready() -> bool:
                for child in self.children.values():
                    if child.name not in self.killed:
                        assert child.alive(), f"{child.name} exited:\n{child.text()[-3000:]}"
                return (await http.get(f"{url}/ready")).status_code == 200

            await until(f"{url}/ready", ready, timeout)

    def venue_leader(self) -> str:
        """The live worker that last logged taking the venue's matching lock."""
        latest: tuple[float, str] | None = None
        for name, child in self.children.items():
            if not name.startswith("worker") or not child.alive():
                continue
            for line in child.text().splitlines():
                if LEADER_LINE in line:
                    stamp = _log_time(line)
                    if latest is None or stamp >= latest[0]:
                        latest = (stamp, name)
        return latest[1] if latest else "worker-1"

    async def fetch(self, query: str, *args: Any, timeout: float = 30) -> list[asyncpg.Record]:
        """A read that rides out a connection the restart broke: retried until `timeout`."""
        assert self.pool is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await asyncio.wait_for(self.pool.fetch(query, *args), timeout=10)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as err:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{query[:60]}...: {err!r}") from err
                await asyncio.sleep(0.3)

    async def close(self) -> None:
        self.thaw()
        self.resume_temporal()
        await asyncio.gather(
            *(child.stop() for child in self.children.values()), return_exceptions=True
        )
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), timeout=10)
        with contextlib.suppress(Exception):
            await self.temporal.stop()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pg.stop(), timeout=60)
            with contextlib.suppress(Exception):  # a failed restart may have left one running
                pid = self.postmaster_pid()
                if Path(f"/proc/{pid}/comm").read_text().strip() == "postgres":
                    os.kill(pid, signal.SIGQUIT)
        if self.external_url and self.database_name:
            with contextlib.suppress(Exception):
                await drop_database(self.external_url, self.database_name)

    def kill_everything(self) -> None:
        """The watchdog's last resort (another thread): SIGKILL all we started."""
        self.thaw()
        self.resume_temporal()
        for child in self.children.values():
            child.kill()
        _signal_group(self.temporal.pid, signal.SIGKILL)
        if self.pg is not None:
            with contextlib.suppress(Exception):
                os.kill(self.postmaster_pid(), signal.SIGKILL)


def _log_time(line: str) -> float:
    match = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", line)
    if not match:
        return 0.0
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


# -- orders -------------------------------------------------------------------------------------


@dataclass
class Plan:
    index: int
    phase: str
    symbol: str
    side: str
    quantity: int
    api: int  # which API gets the first attempt
    client_order_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class Attempt:
    at: float  # unix time the request was sent
    api: int
    status: int | None  # HTTP status, None: no answer (timeout, connection refused)
    code: str | None = None  # the error envelope's code
    answered: float = field(default_factory=time.time)  # unix time the answer (or error) came


@dataclass
class Outcome:
    plan: Plan
    attempts: list[Attempt] = field(default_factory=list)
    order_ids: set[str] = field(default_factory=set)  # from every 201/200 (and 422)
    decision: str | None = None  # "accepted" (201/200) or "rejected" (422 with a code)
    reject_code: str | None = None
    first_sent: float | None = None


def make_plans() -> dict[str, list[Plan]]:
    """50 market orders: 2 before any fault, 14 around the worker kill, 17 around each outage
    (12 in the burst, 4 sent during the outage, 1 probe right after restoring)."""
    rng = random.Random(20240917)
    counter = iter(range(1000))

    def plan(phase: str, side: str | None = None, symbol: str | None = None) -> Plan:
        index = next(counter)
        side = side or ("buy" if rng.random() < 0.6 else "sell")
        quantity = rng.randint(1, 6) if side == "buy" else rng.randint(1, 3)
        return Plan(index, phase, symbol or rng.choice(SYMBOLS), side, quantity, index % 2)

    plans = {"warmup": [plan("warmup", "buy", s) for s in ("AAPL", "KO")]}
    plans["worker_kill"] = [plan("worker_kill", "buy", s) for s in SYMBOLS] + [
        plan("worker_kill") for _ in range(8)
    ]
    plans["worker_kill_probe"] = [plan("worker_kill_probe", "buy", "INTC")]
    for phase in ("postgres", "temporal"):
        plans[phase] = [plan(phase) for _ in range(12)]
        plans[f"{phase}_during"] = [plan(f"{phase}_during") for _ in range(4)]
        plans[f"{phase}_probe"] = [plan(f"{phase}_probe", "buy", "KO")]
    assert sum(len(p) for p in plans.values()) == 50
    return plans


class Orders:
    """Places orders through both APIs with the signed client, retrying what got no decision
    with the same client_order_id on the other API; keeps every attempt."""

    def __init__(self, stack: ScaleOutStack, deadline: float) -> None:
        self.stack = stack
        self.deadline = deadline
        self.outcomes: dict[str, Outcome] = {}
        self.tasks: list[asyncio.Task[Outcome]] = []
        self.statuses: dict[str, int] = {}  # client_order_id -> status of its last answer
        self.clients = [
            AsyncTradingClient(
                url,
                stack.credentials["api_key"],
                stack.credentials["api_secret"],
                timeout=CLIENT_TIMEOUT,
            )
            for url in stack.api_urls
        ]
        for client in self.clients:
            client.http.event_hooks["response"].append(self._remember_status)

    async def _remember_status(self, response: httpx.Response) -> None:
        if response.request.method == "POST":
            with contextlib.suppress(ValueError, KeyError):
                body = json.loads(response.request.content)
                self.statuses[body["client_order_id"]] = response.status_code

    def start(self, plans: list[Plan]) -> list[asyncio.Task[Outcome]]:
        tasks = [
            asyncio.create_task(self.place(plan), name=f"order-{plan.index}-{plan.phase}")
            for plan in plans
        ]
        self.tasks.extend(tasks)
        return tasks

    async def place(self, plan: Plan) -> Outcome:
        outcome = self.outcomes[plan.client_order_id] = Outcome(plan)
        api = plan.api
        while True:
            sent = time.time()
            outcome.first_sent = outcome.first_sent or sent
            try:
                placed = await self.clients[api].place_order(
                    plan.symbol,
                    plan.quantity,
                    plan.side,
                    client_order_id=plan.client_order_id,
                )
            except TradingApiError as err:
                outcome.attempts.append(Attempt(sent, api, err.status, err.code))
                if err.status == 422 and err.details.get("reject_code"):
                    outcome.decision, outcome.reject_code = "rejected", err.details["reject_code"]
                    outcome.order_ids.add(str(err.details["order_id"]))
                    return outcome
                if err.status < 500 and err.status != 429:
                    # 409 and other refusals are answers this test does not expect.
                    outcome.decision = f"refused {err.status} {err.code}: {err.message}"
                    return outcome
                # 429, 5xx: retry. A retry is a new request: new timestamp, new signature.
            except (httpx.TransportError, httpx.DecodingError) as err:
                outcome.attempts.append(Attempt(sent, api, None, type(err).__name__))
            else:
                status = self.statuses.get(plan.client_order_id)
                outcome.attempts.append(Attempt(sent, api, status))
                outcome.decision = "accepted"
                outcome.order_ids.add(str(placed.order_id))
                return outcome
            if time.monotonic() > self.deadline:
                outcome.decision = None
                return outcome
            api = 1 - api  # fail over to the other API
            await asyncio.sleep(1.0 + random.random() * 0.2)

    async def settle(self, timeout: float) -> None:
        """Every placement has its answer (or gave up at the deadline)."""
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        unanswered = [t.get_name() for t in self.tasks if not t.done()]
        assert not unanswered, f"placements still without a decision: {unanswered}"

    def order_ids(self) -> list[uuid.UUID]:
        return [uuid.UUID(i) for o in self.outcomes.values() for i in o.order_ids]

    async def wait_terminal(self, timeout: float) -> None:
        """Every placement answered, and every order so far in a terminal status."""
        began = time.monotonic()
        await self.settle(timeout)
        remaining = max(1.0, timeout - (time.monotonic() - began))

        async def all_terminal() -> bool:
            rows = await self.stack.fetch(
                "SELECT id, status FROM orders WHERE id = ANY($1::uuid[])", self.order_ids()
            )
            return len(rows) == len(set(self.order_ids())) and all(
                r["status"] in TERMINAL for r in rows
            )

        try:
            await until("every order terminal", all_terminal, remaining, every=0.3)
        except AssertionError as err:
            rows = await self.stack.fetch(
                "SELECT o.id, o.status, o.symbol, o.side, v.status AS venue,"
                " (SELECT count(*) FROM venue_outbox x WHERE x.client_order_id = o.id::text"
                "  AND x.delivered_at IS NULL) AS undelivered"
                " FROM orders o LEFT JOIN venue_orders v ON v.client_order_id = o.id::text"
                " WHERE o.id = ANY($1::uuid[]) AND o.status NOT IN"
                " ('filled', 'canceled', 'expired', 'rejected')",
                self.order_ids(),
            )
            raise AssertionError(f"{err}; open: {[dict(r) for r in rows]}") from None

    async def aclose(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in self.clients:
            await client.aclose()


async def wait_filled(stack: ScaleOutStack, task: asyncio.Task[Outcome], timeout: float) -> None:
    """A probe order: answered, then terminal in the books."""
    began = time.monotonic()
    done, _ = await asyncio.wait([task], timeout=timeout)
    assert done, f"the probe {task.get_name()} got no decision within {timeout:.0f}s"
    outcome = task.result()
    assert outcome.decision == "accepted", (outcome.decision, outcome.attempts)
    order_id = uuid.UUID(next(iter(outcome.order_ids)))

    async def terminal() -> bool:
        rows = await stack.fetch("SELECT status FROM orders WHERE id = $1", order_id)
        return bool(rows) and rows[0]["status"] in TERMINAL

    await until("the probe filled", terminal, max(1.0, timeout - (time.monotonic() - began)))


# -- the test -----------------------------------------------------------------------------------


async def test_scale_out_survives_worker_kill_and_postgres_and_temporal_outages(
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    stack = ScaleOutStack(tmp_path)
    watchdog = threading.Timer(OVERALL_TIMEOUT + 30, stack.kill_everything)
    watchdog.daemon = True
    watchdog.start()
    marks: dict[str, float] = {}  # unix times of the faults and their restorations
    report: dict[str, Any] = {"pg_fault": PG_FAULT, "outage_seconds": OUTAGE_SECONDS}
    orders: Orders | None = None
    try:
        async with asyncio.timeout(OVERALL_TIMEOUT):
            report["startup_seconds"] = round(await stack.start(), 2)
            plans = make_plans()
            orders = Orders(stack, deadline=began + OVERALL_TIMEOUT - 20)

            # Before any fault: the latency of an undisturbed order, for comparison.
            for task in orders.start(plans["warmup"]):
                await wait_filled(stack, task, timeout=30)

            # A. SIGKILL of the worker running the venue's matching loop, mid-burst; then
            # its replacement starts, as an orchestrator would start it.
            orders.start(plans["worker_kill"])
            await asyncio.sleep(BURST_TO_FAULT)
            victim = report["killed_worker"] = stack.venue_leader()
            marks["worker_kill"] = time.time()
            stack.killed.add(victim)
            stack.children[victim].kill()
            replacement = stack.spawn(f"{victim}-restarted", "worker")
            probe = orders.start(plans["worker_kill_probe"])[0]
            await stack.worker_ready(replacement.name)
            marks["worker_restarted"] = time.time()
            await wait_filled(stack, probe, timeout=PHASE_TIMEOUT)
            await orders.wait_terminal(timeout=PHASE_TIMEOUT)
            marks["worker_kill_drained"] = time.time()

            # B. The Temporal server paused (SIGSTOP of its process group), mid-burst.
            pause, resume = _now(stack.pause_temporal), _now(stack.resume_temporal)
            await outage(stack, orders, plans, marks, "temporal", pause, resume)

            # C. PostgreSQL away, mid-burst. Last: it is the fault that takes the most down.
            if stack.pg is None:
                report["postgres"] = "not stopped: DATABASE_URL names a server we do not own"
                await outage(stack, orders, plans, marks, "postgres", None, None)
            elif PG_FAULT == "freeze":
                freeze, thaw = _now(stack.freeze_postgres), _now(stack.thaw)
                await outage(stack, orders, plans, marks, "postgres", freeze, thaw)
            else:
                await outage(
                    stack,
                    orders,
                    plans,
                    marks,
                    "postgres",
                    stack.stop_postgres,
                    stack.start_postgres_again,
                )

            await measure(stack, orders, marks, report)
            await verify(stack, orders, report)
    finally:
        report["wall_seconds"] = round(time.monotonic() - began, 1)
        report["log_findings"] = log_findings(stack)
        if orders is not None:
            report["post_attempts"] = attempt_summary(orders)
            await orders.aclose()
        closing = time.monotonic()
        await stack.close()
        report["teardown_seconds"] = round(time.monotonic() - closing, 1)
        watchdog.cancel()
        (tmp_path / "scale_out.json").write_text(json.dumps(report, indent=2, default=str))
        print_report(report, tmp_path)


Fault = Callable[[], Awaitable[None]] | None


def _now(action: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    """A signal sent at once, as the awaitable step `outage` takes."""

    async def run() -> None:
        action()

    return run


async def outage(
    stack: ScaleOutStack,
    orders: Orders,
    plans: dict[str, list[Plan]],
    marks: dict[str, float],
    name: str,
    down: Fault,
    up: Fault,
) -> None:
    """A burst, `down` half a second into it, orders arriving while it is down, `up` once it
    has been down OUTAGE_SECONDS, then a probe order; returns when every order is terminal.
    Without `down` (a fault this run cannot inject) the orders go through undisturbed."""
    orders.start(plans[name])
    await asyncio.sleep(BURST_TO_FAULT)
    marks[f"{name}_down"] = time.time()
    if down is not None:
        await down()
    marks[f"{name}_stopped"] = time.time()
    duration = OUTAGE_SECONDS if down is not None else 0.0
    for n, plan in enumerate(plans[f"{name}_during"]):
        at = marks[f"{name}_down"] + duration * (n + 0.5) / (len(plans[f"{name}_during"]) + 1)
        await asyncio.sleep(max(0.0, at - time.time()))
        orders.start([plan])
    await asyncio.sleep(max(0.0, marks[f"{name}_down"] + duration - time.time()))
    marks[f"{name}_restoring"] = time.time()
    if up is not None:
        await up()
    marks[f"{name}_up"] = time.time()
    probe = orders.start(plans[f"{name}_probe"])[0]
    await wait_filled(stack, probe, timeout=PHASE_TIMEOUT)
    await orders.wait_terminal(timeout=PHASE_TIMEOUT)
    marks[f"{name}_drained"] = time.time()


# -- checks -------------------------------------------------------------------------------------


async def verify(stack: ScaleOutStack, orders: Orders, report: dict[str, Any]) -> None:
    outcomes = list(orders.outcomes.values())
    assert len(outcomes) == 50
    undecided = {
        o.plan.index: (o.decision, o.attempts[-3:])
        for o in outcomes
        if o.decision not in ("accepted", "rejected")
    }
    assert not undecided, f"orders without a decision: {undecided}"
    pid = stack.portfolio_id
    rows = await stack.fetch(
        "SELECT id, client_order_id, symbol, side, order_type, status, quantity,"
        " filled_quantity, reject_code, reject_reason FROM orders WHERE portfolio_id = $1",
        pid,
    )
    books = {str(r["id"]): r for r in rows}

    # Nothing lost, nothing doubled: each placement is exactly one order row, and every
    # 201/200/422 that named an order named that one.
    by_client_id = Counter(r["client_order_id"] for r in books.values())
    assert set(by_client_id) == {o.plan.client_order_id for o in outcomes}, (
        "orders in the books that no POST placed, or POSTs with no order: "
        f"{set(by_client_id) ^ {o.plan.client_order_id for o in outcomes}}"
    )
    assert max(by_client_id.values()) == 1, by_client_id.most_common(3)
    for o in outcomes:
        assert len(o.order_ids) == 1, (o.plan, o.order_ids)
        row = books.get(next(iter(o.order_ids)))
        assert row is not None and row["client_order_id"] == o.plan.client_order_id, o.plan
        if o.decision == "rejected":
            assert row["status"] == "rejected" and row["reject_code"] == o.reject_code, dict(row)

    # Every order terminal: market orders filled, or rejected by risk with a code.
    unexplained = [
        dict(r)
        for r in books.values()
        if not (
            (r["status"] == "filled" and r["filled_quantity"] == r["quantity"])
            or (r["status"] == "rejected" and r["reject_code"])
        )
    ]
    assert not unexplained, f"orders neither filled nor rejected with a code: {unexplained}"
    report["orders"] = dict(Counter(r["status"] for r in books.values()))
    report["reject_codes"] = dict(
        Counter(r["reject_code"] for r in books.values() if r["reject_code"])
    )

    # The books equal the venue: order by order, execution by execution.
    venue_rows = await stack.fetch(
        "SELECT client_order_id, status, filled_quantity FROM venue_orders"
    )
    venue = {r["client_order_id"]: r for r in venue_rows}
    assert set(venue) <= set(books), f"venue orders the books lack: {set(venue) - set(books)}"
    for order_id, row in books.items():
        at_venue = venue.get(order_id)
        if row["status"] == "rejected" and at_venue is None:
            continue  # refused by risk before reaching the venue
        assert at_venue is not None, f"order {order_id} ({row['status']}) never reached the venue"
        assert VENUE_STATUS[at_venue["status"]] == row["status"], (dict(row), dict(at_venue))
        assert at_venue["filled_quantity"] == row["filled_quantity"], (dict(row), dict(at_venue))
    booked = {
        r["execution_id"]: r
        for r in await stack.fetch(
            "SELECT execution_id, order_id::text AS order_id, side, quantity, price, commission"
            " FROM executions WHERE portfolio_id = $1",
            pid,
        )
    }
    made = {
        r["execution_id"]: r
        for r in await stack.fetch(
            "SELECT execution_id, client_order_id AS order_id, quantity, price, commission"
            " FROM venue_executions"
        )
    }
    assert set(booked) == set(made), {
        "booked, not made": sorted(set(booked) - set(made)),
        "made, not booked": sorted(set(made) - set(booked)),
    }
    for execution_id, execution in booked.items():
        theirs = made[execution_id]
        mine = (execution["order_id"], execution["quantity"], execution["price"])
        assert mine == (theirs["order_id"], theirs["quantity"], theirs["price"]), execution_id
        assert execution["commission"] == theirs["commission"], execution_id
    for order_id, row in books.items():
        executed = sum((e["quantity"] for e in booked.values() if e["order_id"] == order_id), 0)
        assert executed == row["filled_quantity"], (order_id, executed, row["filled_quantity"])

    # Cash moved by exactly the settled fills and commissions; the ledger balances.
    sides = {order_id: row["side"] for order_id, row in books.items()}
    expected_cash = DEFAULT_CAPITAL
    commissions = Decimal(0)
    for execution in made.values():
        notional = round_cents(execution["quantity"] * execution["price"])
        sign = -1 if sides[execution["order_id"]] == "buy" else 1
        expected_cash += sign * notional - execution["commission"]
        commissions += execution["commission"]
    assert stack.pool is not None
    async with UnitOfWork(stack.pool) as uow:
        portfolio = await uow.portfolios.get(pid)
    assert portfolio.cash == expected_cash, (portfolio.cash, expected_cash)
    assert portfolio.ledger_imbalance() == 0, portfolio.ledger_imbalance()
    assert portfolio.cash >= 0, portfolio.cash
    assert portfolio.total_commissions == commissions, (portfolio.total_commissions, commissions)
    assert not portfolio.reservations, portfolio.reservations
    for symbol, position in portfolio.positions.items():
        signed = sum(
            (
                e["quantity"] * (1 if sides[e["order_id"]] == "buy" else -1)
                for e in made.values()
                if books[e["order_id"]]["symbol"] == symbol
            ),
            Decimal(0),
        )
        assert position.quantity == signed, (symbol, position.quantity, signed)
    report["cash"] = {
        "initial": str(DEFAULT_CAPITAL),
        "final": str(portfolio.cash),
        "commissions": str(commissions),
        "fills": len(made),
    }

    # No order workflow left running.
    client = await connect(stack.temporal.address)

    async def none_running() -> bool:
        count = await client.count_workflows(
            "WorkflowType = 'OrderWorkflow' AND ExecutionStatus = 'Running'"
        )
        return count.count == 0

    await until("every order workflow closed", none_running, timeout=20, every=0.5)

    # Still alive after it all: every venue event delivered (the outbox relay runs), and
    # both APIs ready (database, Temporal, a worker holding the venue's matching lock).
    async def outbox_empty() -> bool:
        rows = await stack.fetch(
            "SELECT count(*) AS n FROM venue_outbox WHERE delivered_at IS NULL"
        )
        return bool(rows[0]["n"] == 0)

    try:
        await until("venue outbox delivered", outbox_empty, timeout=15, every=0.5)
    except AssertionError:
        rows = await stack.fetch(
            "SELECT count(*) AS n, min(created_at) AS oldest FROM venue_outbox"
            " WHERE delivered_at IS NULL"
        )
        raise AssertionError(
            f"{rows[0]['n']} venue events never delivered (oldest written "
            f"{rows[0]['oldest']}): no worker's outbox relay is running; every order "
            "closed only through its broker poll (ORDER_POLL_INTERVAL_SECONDS)"
        ) from None
    for url in stack.api_urls:
        await stack.api_ready(url, timeout=15)


async def measure(
    stack: ScaleOutStack, orders: Orders, marks: dict[str, float], report: dict[str, Any]
) -> None:
    """Recovery times from the database's own timestamps: an order counts as filled when its
    last execution was booked (executions.created_at), rejected when its row last changed."""
    rows = await stack.fetch(
        "SELECT o.id::text AS id, o.status, o.updated_at, max(e.created_at) AS booked"
        " FROM orders o LEFT JOIN executions e ON e.order_id = o.id"
        " WHERE o.portfolio_id = $1 GROUP BY o.id",
        stack.portfolio_id,
    )
    done_at = {r["id"]: (r["booked"] or r["updated_at"]).timestamp() for r in rows}

    def finished(phases: tuple[str, ...]) -> list[tuple[Outcome, float]]:
        return [
            (o, done_at[i])
            for o in orders.outcomes.values()
            if o.plan.phase in phases
            for i in o.order_ids
        ]

    def first_2xx_after(at: float) -> float | None:
        """Until the APIs answered 201/200 again (a request held through the outage counts)."""
        times = [
            a.answered
            for o in orders.outcomes.values()
            for a in o.attempts
            if a.status in (200, 201) and a.answered >= at
        ]
        return round(min(times) - at, 2) if times else None

    warm = finished(("warmup",))
    report["baseline_post_to_fill_seconds"] = [round(t - (o.first_sent or t), 2) for o, t in warm]
    recovery: dict[str, Any] = {}
    kill = marks["worker_kill"]
    ((probe, probe_done),) = finished(("worker_kill_probe",))
    recovery["worker_kill"] = {
        "killed": report.get("killed_worker"),
        "kill_to_probe_filled": round(probe_done - kill, 2),
        "kill_to_burst_drained": round(max(t for _, t in finished(("worker_kill",))) - kill, 2),
        "replacement_worker_ready_after_kill": round(marks["worker_restarted"] - kill, 2),
    }
    for fault in ("temporal", "postgres"):
        up, down = marks[f"{fault}_up"], marks[f"{fault}_down"]
        ((probe, probe_done),) = finished((f"{fault}_probe",))
        entry = {
            "outage": round(up - down, 2),
            "restored_to_first_2xx": first_2xx_after(up),
            "restored_to_probe_filled": round(probe_done - up, 2),
            "probe_post_to_fill": round(probe_done - (probe.first_sent or up), 2),
            "restored_to_burst_drained": round(
                max(t for _, t in finished((fault, f"{fault}_during"))) - up, 2
            ),
        }
        if fault == "postgres" and "postgres_stopped" in marks:
            entry["stop_took"] = round(marks["postgres_stopped"] - down, 2)
            entry["start_took"] = round(up - marks["postgres_restoring"], 2)
        recovery[fault] = entry
    report["recovery_seconds"] = recovery


def attempt_summary(orders: Orders) -> dict[str, Any]:
    """POST answers per phase (a phase's burst, the orders sent during its fault, its probe)."""
    by_phase: dict[str, Counter[str]] = {}
    for outcome in orders.outcomes.values():
        phase = outcome.plan.phase.removesuffix("_during").removesuffix("_probe")
        for a in outcome.attempts:
            answer = f"{a.status or 'no answer'}{' ' + a.code if a.code else ''}"
            by_phase.setdefault(phase, Counter())[answer] += 1
    retried = sum(1 for o in orders.outcomes.values() if len(o.attempts) > 1)
    return {
        "by_phase": {phase: dict(c.most_common()) for phase, c in by_phase.items()},
        "orders_retried": retried,
    }


def log_findings(stack: ScaleOutStack) -> dict[str, dict[str, int]]:
    """Per process: how often each kind of WARNING/ERROR line appears in its log (numbers,
    ids and request ids folded, so that one kind counts once)."""
    found: dict[str, dict[str, int]] = {}
    for name, child in stack.children.items():
        kinds: Counter[str] = Counter()
        for line in child.text().splitlines():
            if re.match(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) ", line):
                kind = re.sub(r"^\S+ \S+ ", "", line)
                kind = re.sub(r"req-[0-9a-f]+|[0-9a-f]{8}-[0-9a-f-]{27}|\d+", "#", kind)
                kinds[kind[:120]] += 1
        if kinds:
            found[name] = dict(kinds.most_common(10))
    return found


def print_report(report: dict[str, Any], tmp_path: Path) -> None:
    print(f"\n=== scale-out fault test ({tmp_path}) ===")
    print(json.dumps(report, indent=2, default=str))
