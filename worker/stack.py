"""`trading up`: the whole stack in the foreground on one machine.

Starts the Temporal dev server (Web UI, state in .trading/temporal.db), the embedded
PostgreSQL (.trading/pgdata), migrations, then the worker and the API as child processes,
ensures a default portfolio and an API key, writes .trading/credentials.json, creates the
schedules, and waits. Ctrl-C (or SIGTERM) stops the children, then Temporal and
PostgreSQL, in that order. After a crash (even SIGKILL of everything) the next `trading up`
resumes: Temporal, PostgreSQL and the paper venue keep their state on disk.
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
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from activities.store import keys as api_keys
from activities.store import ledger
from activities.store.migrations import migrate_up
from activities.store.postgres import create_pool, resolve_database
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
    pool: asyncpg.Pool, settings: ApiSettings, portfolio_id: UUID, ui_url: str | None
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
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(credentials, indent=2) + "\n")
    temporary.chmod(0o600)
    temporary.replace(path)
    return credentials


def _child(command: str, env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    output = open(log_file, "ab")  # noqa: SIM115  (the child owns it)
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", command],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # we stop children in order, not by the terminal's Ctrl-C
        preexec_fn=die_with_parent,
    )


Children = dict[str, subprocess.Popen[bytes]]


def _exited(children: Children) -> str | None:
    for name, child in children.items():
        if child.poll() is not None:
            return f"{name} exited with {child.returncode}"
    return None


async def _wait_ready(url: str, children: Children, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            if (exited := _exited(children)) is not None:
                raise RuntimeError(f"{exited}; see its log")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API at {url} was not ready within {timeout}s")
            await asyncio.sleep(0.2)


async def _stop_children(children: Children, timeout: float = 20) -> None:
    for child in children.values():
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children.values():
        try:
            await asyncio.to_thread(child.wait, max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            await asyncio.to_thread(child.wait)


async def up(settings: ApiSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    data = settings.data_dir.resolve()
    logs = data / "logs"
    began = time.monotonic()
    temporal = DevServer(
        data / "temporal.db",
        port=_port(settings.temporal_address),
        ui_port=settings.temporal_ui_port,
        namespace=settings.temporal_namespace,
        log_file=logs / "temporal.log",
    )
    async with temporal, resolve_database(settings.database_url, data / "pgdata") as url:
        pool = await create_pool(url, 1, 4)
        try:
            await migrate_up(pool)
            portfolio_id = await ensure_default_portfolio(pool, data / "credentials.json")
            credentials = await ensure_credentials(pool, settings, portfolio_id, temporal.ui_url)
        finally:
            await pool.close()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "TEMPORAL_ADDRESS": temporal.address,
            "DATA_DIR": str(data),
        }
        children = {name: _child(name, env, logs / f"{name}.log") for name in ("worker", "api")}
        # Who is running, for operators and for the crash test (kill -9 them all).
        (data / "stack.json").write_text(
            json.dumps(
                {
                    "up": os.getpid(),
                    "temporal": temporal.pid,
                    **{name: child.pid for name, child in children.items()},
                }
            )
        )
        try:
            await _wait_ready(credentials["api_url"], children, timeout=60)
            print(
                f"\ntrading is up in {time.monotonic() - began:.1f}s\n"
                f"  API          {credentials['api_url']}  (docs: {credentials['api_url']}/docs)\n"
                f"  Temporal UI  {temporal.ui_url}\n"
                f"  credentials  {data / 'credentials.json'}\n"
                f"  logs         {logs}/\n"
                "Try: trading order place AAPL 1 buy   |   Ctrl-C stops everything.\n",
                flush=True,
            )
            while not stop.is_set():
                if (exited := _exited(children)) is not None:
                    log.error("%s; stopping (its log is under %s)", exited, logs)
                    stop.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1)
        finally:
            print("stopping: worker and API, then Temporal and PostgreSQL", flush=True)
            await _stop_children(children)
    return 0


def main() -> int:
    return asyncio.run(up(ApiSettings()))
