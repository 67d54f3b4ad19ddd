"""`trading api`: build ApiDeps as the worker builds its adapters, and serve with uvicorn
on API_HOST:API_PORT until SIGINT/SIGTERM, then finish in-flight requests and close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import cast

import asyncpg
import uvicorn

from activities.brokers.alpaca_rest import AlpacaBroker
from activities.market_data.simulated import SimulatedFeed
from activities.venue.exchange import VENUE_LOCK_KEY
from api.app import create_app
from api.deps import ApiDeps
from bootstrap.resources import open_database, temporal_client
from bootstrap.settings import ApiSettings
from bootstrap.vendors import build_broker, build_market_data, validate_vendor_settings
from contracts.ports import Broker

log = logging.getLogger("trading.api")

GRACEFUL_SHUTDOWN_SECONDS = 10


async def paper_venue_running(pool: asyncpg.Pool) -> bool:
    """Whether some worker runs the paper venue's matching loop: its leader holds a
    session-level advisory lock (a bigint key shows in pg_locks as two 32-bit halves)."""
    return bool(
        await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
            "AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1 AND granted)",
            VENUE_LOCK_KEY >> 32,
            VENUE_LOCK_KEY & 0xFFFFFFFF,
        )
    )


def broker_readiness(settings: ApiSettings, pool: asyncpg.Pool) -> Callable[[], Awaitable[bool]]:
    """Alpaca's account answers when Alpaca is the broker; else the paper venue runs."""
    # No default needed: with Alpaca's keys build_broker returns Alpaca, else the default,
    # and the paper venue lives in the worker, not here.
    broker = build_broker(settings, default=cast(Broker, None))
    if isinstance(broker, AlpacaBroker):
        return broker.ready
    return lambda: paper_venue_running(pool)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises a captured SIGTERM after serving, which would end the process
        # before the pool (and an embedded PostgreSQL started here) are closed; serve()
        # installs its own handlers instead.
        yield


async def serve(settings: ApiSettings) -> None:
    validate_vendor_settings(settings)
    master_key = settings.master_key()
    async with open_database(settings, migrate=True) as pool:
        client = await temporal_client(settings)
        deps = ApiDeps(
            pool=pool,
            temporal=client,
            market_data=build_market_data(settings, SimulatedFeed(seed=settings.feed_seed)),
            broker_ready=broker_readiness(settings, pool),
            settings=settings,
            master_key=master_key,
        )
        config = uvicorn.Config(
            create_app(deps),
            host=settings.api_host,
            port=settings.api_port,
            lifespan="off",
            log_config=None,  # keep the process's logging (worker.cli configures it)
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            server_header=False,
        )
        server = _Server(config)

        def stop() -> None:
            if server.should_exit:
                server.force_exit = True  # a second Ctrl-C: stop waiting for requests
            server.should_exit = True

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        log.info("API on http://%s:%s", settings.api_host, settings.api_port)
        await server.serve()
        log.info("API stopped")


def main(settings: ApiSettings | None = None) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    asyncio.run(serve(settings or ApiSettings()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
