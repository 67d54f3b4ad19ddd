"""`trading up`: the whole stack in the foreground on one machine, supervised.

Starts the Temporal dev server (Web UI, state in .trading/temporal.db, Prometheus metrics),
the embedded PostgreSQL (.trading/pgdata), migrations, then the worker and the API as
child processes, ensures a default portfolio and an API key, writes
.trading/credentials.json (with the metrics URLs), and supervises:

* a child (worker, API) that exits is started again after a backoff (1 s doubling to
  30 s; back to 1 s once it has run for a minute), with the reason logged (exit code or
  signal, and the last line of its log); it never ends the stack;
* a Temporal dev server or an embedded PostgreSQL that dies is noticed within a second
  and started again on the same state and port, with the same backoff; a PostgreSQL named
  by DATABASE_URL is not ours to restart: its outage is reported when it starts and when
  it ends.

Ctrl-C (or SIGTERM) stops the children, then Temporal and PostgreSQL, in that order,
whatever already died, and ends with a "stopped" line. After a crash (even SIGKILL of
everything) the next `trading up` resumes: Temporal, PostgreSQL and the paper venue keep
their state on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from activities.store import keys as api_keys
from activities.store import ledger
from activities.store.migrations import migrate_up
from activities.store.postgres import (
    LocalPostgres,
    PostgresError,
    create_pool,
    free_port,
    process_alive,
)
from activities.store.repositories import NotFoundError, UnitOfWork
from bootstrap.settings import ApiSettings
from domain.portfolio import Portfolio, RiskLimits
from worker.devserver import DevServer, die_with_parent

log = logging.getLogger("trading.up")

# The portfolio a new user trades: 100,000 USD, limits loose enough for a few round lots
# of any name in the simulated universe, tight enough that risk refusals are easy to see.
DEFAULT_CAPITAL = Decimal("100000.00")
DEFAULT_LIMITS = RiskLimits(
    max_position_size=Decimal("25000"),
    max_order_notional=Decimal("25000"),
    max_concentration=Decimal("0.25"),
    max_positions=20,
    daily_loss_limit=Decimal("5000"),
)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


async def ensure_default_portfolio(pool: asyncpg.Pool, credentials: Path) -> UUID:
    """The portfolio named in credentials.json if it still exists, else a new one."""
    if credentials.exists():
        with contextlib.suppress(ValueError, KeyError, json.JSONDecodeError):
            portfolio_id = UUID(json.loads(credentials.read_text())["portfolio_id"])
            async with UnitOfWork(pool) as uow:
                with contextlib.suppress(NotFoundError):
                    await uow.portfolios.get(portfolio_id)
                    return portfolio_id
    portfolio = Portfolio(name="default", initial_capital=DEFAULT_CAPITAL, limits=DEFAULT_LIMITS)
    await ledger.create_portfolio(pool, portfolio)
    log.info("created the default portfolio %s (%s USD)", portfolio.id, DEFAULT_CAPITAL)
    return portfolio.id


async def ensure_credentials(
    pool: asyncpg.Pool,
    settings: ApiSettings,
    portfolio_id: UUID,
    ui_url: str | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Reuse the key in credentials.json while it is valid; otherwise create one and write
    the file (mode 0600: it holds the secret)."""
    path = settings.data_dir / "credentials.json"
    master_key = settings.master_key()
    current: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        current = json.loads(path.read_text())
    key_id, secret = current.get("api_key"), current.get("api_secret")
    key = await api_keys.lookup_key(pool, key_id) if isinstance(key_id, str) else None
    usable = (
        key is not None
        and not key.revoked
        and key.portfolio_id == portfolio_id
        and api_keys.matches(key, master_key)
        and secret == api_keys.derive_secret(master_key, key.key_id)
    )
    if not usable:
        key_id, secret = await api_keys.create_key(pool, portfolio_id, master_key, "make up")
    credentials = {
        "api_url": f"http://{settings.api_host}:{settings.api_port}",
        "api_key": key_id,
        "api_secret": secret,
        "portfolio_id": str(portfolio_id),
        "temporal_ui": ui_url,
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(credentials, indent=2) + "\n")
    temporary.chmod(0o600)
    temporary.replace(path)
    return credentials


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exited with {code}"


def _last_line(path: Path) -> str:
    """The last non-empty line of a log (its end only: logs grow)."""
    with contextlib.suppress(OSError):
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 4096))
            lines = [line.strip() for line in handle.read().decode(errors="replace").splitlines()]
            for line in reversed(lines):
                if line:
                    return line[:300]
    return ""


class Backoff:
    """1 s doubling to 30 s between restarts; back to 1 s after a minute of running."""

    FIRST, LONGEST, STABLE = 1.0, 30.0, 60.0

    def __init__(self) -> None:
        self.delay = self.FIRST
        self.restarts = 0

    def next(self, ran_for: float) -> float:
        if ran_for >= self.STABLE:
            self.delay = self.FIRST
        delay = self.delay
        self.delay = min(self.LONGEST, self.delay * 2)
        self.restarts += 1
        return delay


class Child:
    """A `trading <command>` child in its own session, its output appended to its log."""

    def __init__(self, name: str, env: dict[str, str], log_file: Path) -> None:
        self.name = name
        self.env = env
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.restart_at: float | None = None
        self.backoff = Backoff()

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", self.name],
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # we stop children in order, not by the terminal
                preexec_fn=die_with_parent,
            )
        self.started = time.monotonic()
        self.restart_at = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def supervise(self, now: float) -> bool:
        """Restart a child that exited once its backoff is over; True when it (re)started."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.start()
                log.warning("%s started again (pid %s)", self.name, self.pid)
                return True
            return False
        code = self.exit_code()
        if code is None:
            return False
        ran = now - self.started
        delay = self.backoff.next(ran)
        self.restart_at = now + delay
        log.error(
            "%s %s after %.1f s; restarting in %.0f s (restart %d). Last log line: %s [%s]",
            self.name,
            _describe_exit(code),
            ran,
            delay,
            self.backoff.restarts,
            _last_line(self.log_file) or "-",
            self.log_file,
        )
        return False

    async def stop(self, timeout: float = 20) -> None:
        self.restart_at = None
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait)


class StackTemporal(DevServer):
    """The dev server with its Prometheus endpoint on a known port, and an exit check."""

    def __init__(self, *args: Any, metrics_port: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics_port = metrics_port

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        return [*super().command(), "--metrics-port", str(self.metrics_port)]

    def exit_code(self) -> int | None:
        process = self._process
        return None if process is None else process.poll()


class Service:
    """Supervision of Temporal or the embedded PostgreSQL: noticed dead, started again on
    the same state and port after a backoff; a failed start is one line, then retried."""

    def __init__(
        self,
        name: str,
        dead: Callable[[], str | None],
        restart: Callable[[], Awaitable[None]],
    ) -> None:
        self.name = name
        self.dead = dead
        self.restart = restart
        self.backoff = Backoff()
        self.started = time.monotonic()
        self.restart_at: float | None = None

    async def supervise(self, now: float) -> bool:
        """True when it was started again just now."""
        if self.restart_at is None:
            reason = self.dead()
            if reason is None:
                return False
            delay = self.backoff.next(now - self.started)
            self.restart_at = now + delay
            log.error(
                "%s %s; starting it again in %.0f s (restart %d)",
                self.name,
                reason,
                delay,
                self.backoff.restarts,
            )
            return False
        if now < self.restart_at:
            return False
        try:
            await self.restart()
        except Exception as err:
            delay = self.backoff.next(0)
            self.restart_at = time.monotonic() + delay
            log.error(
                "%s did not start (%s); trying again in %.0f s",
                self.name,
                str(err).splitlines()[0][:300] if str(err) else type(err).__name__,
                delay,
            )
            return False
        self.started = time.monotonic()
        self.restart_at = None
        log.warning("%s is running again", self.name)
        return True


class ExternalDatabase:
    """A DATABASE_URL server: not ours to restart; its outages are reported, start and end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.down_since: float | None = None
        self.next_check = 0.0

    async def supervise(self, now: float) -> bool:
        if now < self.next_check:
            return False
        self.next_check = now + 5
        try:
            conn = await asyncpg.connect(self.url, timeout=3)
            await conn.close()
        except Exception as err:
            if self.down_since is None:
                self.down_since = now
                log.error(
                    "PostgreSQL at DATABASE_URL does not answer (%s); the worker and the API "
                    "answer 503 until it is back",
                    type(err).__name__,
                )
            return False
        if self.down_since is not None:
            log.warning(
                "PostgreSQL at DATABASE_URL answers again after %.0f s", now - self.down_since
            )
            self.down_since = None
        return False


@dataclass
class PostgresSlot:
    """The embedded server `trading up` runs (None: DATABASE_URL), replaced on restart."""

    server: LocalPostgres | None = None


def _postgres_dead(server: LocalPostgres) -> str | None:
    pidfile = server.data_dir / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return "stopped (no postmaster.pid)"
    if not process_alive(pid):
        return f"died (postmaster pid {pid})"
    return None


def _temporal_dead(server: StackTemporal) -> str | None:
    code = server.exit_code()
    return None if code is None else _describe_exit(code)


async def _wait_ready(url: str, children: dict[str, Child], timeout: float) -> None:
    """Until the API answers /health; children that exit meanwhile are restarted."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            for child in children.values():
                child.supervise(time.monotonic())
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API at {url} was not ready within {timeout}s")
            await asyncio.sleep(0.2)


def _write_stack_file(data: Path, temporal: DevServer, children: dict[str, Child]) -> None:
    """Who is running, for operators and for the crash tests (kill -9 them all)."""
    stack = {"up": os.getpid(), "temporal": temporal.pid}
    stack |= {name: child.pid for name, child in children.items()}
    temporary = data / "stack.json.tmp"
    temporary.write_text(json.dumps(stack))
    temporary.replace(data / "stack.json")


def metrics_urls(settings: ApiSettings, temporal: StackTemporal) -> dict[str, str | None]:
    worker_port = settings.worker_metrics_port
    return {
        "api": f"http://{settings.api_host}:{settings.api_port}/metrics",
        "worker": (
            f"http://{settings.worker_metrics_host}:{worker_port}/metrics" if worker_port else None
        ),
        "temporal": temporal.metrics_url,
    }


async def up(settings: ApiSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    data = settings.data_dir.resolve()
    logs = data / "logs"
    began = time.monotonic()
    temporal = StackTemporal(
        data / "temporal.db",
        port=_port(settings.temporal_address),
        ui_port=settings.temporal_ui_port,
        namespace=settings.temporal_namespace,
        log_file=logs / "temporal.log",
        metrics_port=free_port(),
    )
    postgres = PostgresSlot()
    children: dict[str, Child] = {}
    try:
        await temporal.start()
        if settings.database_url:
            url = settings.database_url
        else:
            postgres.server = LocalPostgres(data / "pgdata")
            url = await postgres.server.start()
        pool = await create_pool(url, 1, 4)
        try:
            await migrate_up(pool)
            portfolio_id = await ensure_default_portfolio(pool, data / "credentials.json")
            metrics = metrics_urls(settings, temporal)
            credentials = await ensure_credentials(
                pool,
                settings,
                portfolio_id,
                temporal.ui_url,
                {
                    "temporal_address": temporal.address,
                    "temporal_namespace": settings.temporal_namespace,
                    "database_url": url,
                    "metrics": metrics,
                },
            )
        finally:
            await pool.close()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "TEMPORAL_ADDRESS": temporal.address,
            "DATA_DIR": str(data),
        }
        children = {name: Child(name, env, logs / f"{name}.log") for name in ("worker", "api")}
        for child in children.values():
            child.start()
        _write_stack_file(data, temporal, children)
        await _wait_ready(credentials["api_url"], children, timeout=60)
        _write_stack_file(data, temporal, children)
        api = credentials["api_url"]
        print(
            f"\ntrading is up in {time.monotonic() - began:.1f}s\n"
            f"  API          {api}  (docs: {api}/docs)\n"
            f"  Temporal     {temporal.address}  (frontend gRPC)\n"
            f"  Temporal UI  {temporal.ui_url}\n"
            f"  metrics      API {metrics['api']}\n"
            f"               worker {metrics['worker'] or 'off (WORKER_METRICS_PORT=0)'}\n"
            f"               Temporal {metrics['temporal']}\n"
            f"  credentials  {data / 'credentials.json'}\n"
            f"  logs         {logs}/\n"
            "Try: trading order place AAPL 1 buy   |   Ctrl-C stops everything.\n",
            flush=True,
        )
        await _supervise(stop, data, temporal, postgres, url, children)
    finally:
        print("stopping: worker and API, then Temporal and PostgreSQL", flush=True)
        await asyncio.gather(*(child.stop() for child in children.values()))
        try:
            await temporal.stop()
        except Exception as err:  # whatever happened to it, keep stopping the rest
            log.warning("stopping Temporal: %s", err)
        if postgres.server is not None:
            try:
                await postgres.server.stop()
            except (PostgresError, OSError) as err:
                first = str(err).splitlines()[0] if str(err) else type(err).__name__
                log.warning("PostgreSQL was not running any more (%s)", first[:200])
        print("stopped", flush=True)
    return 0


async def _supervise(
    stop: asyncio.Event,
    data: Path,
    temporal: StackTemporal,
    postgres: PostgresSlot,
    url: str,
    children: dict[str, Child],
) -> None:
    async def restart_temporal() -> None:
        await temporal.stop()  # reaps the dead process
        await temporal.start()

    services: list[Service | ExternalDatabase] = [
        Service("Temporal", lambda: _temporal_dead(temporal), restart_temporal)
    ]
    if postgres.server is not None:
        data_dir = postgres.server.data_dir

        def postgres_dead() -> str | None:
            return None if postgres.server is None else _postgres_dead(postgres.server)

        async def restart_postgres() -> None:
            # Same data directory and port: the children's DATABASE_URL stays valid. The
            # new object is the one Ctrl-C stops.
            server = LocalPostgres(data_dir, port=_port_of(url))
            await server.start()
            postgres.server = server

        services.append(Service("PostgreSQL", postgres_dead, restart_postgres))
    else:
        services.append(ExternalDatabase(url))
    while not stop.is_set():
        now = time.monotonic()
        changed = [await service.supervise(now) for service in services]
        changed += [child.supervise(now) for child in children.values()]
        if any(changed):
            _write_stack_file(data, temporal, children)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)


def _port_of(url: str) -> int:
    return int(url.split("@", 1)[-1].split("/", 1)[0].rsplit(":", 1)[1])


def main() -> int:
    return asyncio.run(up(ApiSettings()))
