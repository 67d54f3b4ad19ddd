"""Composition root of the worker: build every adapter by hand and run the Temporal worker,
the paper venue's matching loop and the outbox relay until asked to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import cast

import asyncpg
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.market_data import SimulatedFeed
from activities.migrations import migrate_up
from activities.operations import OperationsActivities, ReconcilableBroker
from activities.orders import OrderActivities
from activities.outbox import OutboxRelay, temporal_deliver
from activities.paper_venue import PaperVenue
from activities.postgres import create_pool, resolve_database
from activities.sessions import MarketSessions
from activities.store import UnitOfWork
from worker.adapters import (
    build_broker,
    build_market_data,
    build_trade_stream,
    validate_vendor_settings,
)
from worker.schedules import ensure_schedules
from worker.settings import Settings
from worker.temporal import connect, register_search_attributes
from workflows.contracts import workflow_id_for
from workflows.operations import WORKFLOWS as OPERATIONS_WORKFLOWS
from workflows.order import OrderWorkflow

log = logging.getLogger("trading.worker")


@contextlib.asynccontextmanager
async def open_database(settings: Settings, *, migrate: bool = True) -> AsyncIterator[asyncpg.Pool]:
    """The pool on DATABASE_URL, or on the embedded server under the data dir."""
    async with resolve_database(settings.database_url, settings.data_dir / "pgdata") as url:
        pool = await create_pool(url, settings.db_pool_min, settings.db_pool_max)
        try:
            if migrate:
                async with pool.acquire() as conn:
                    await migrate_up(conn)
            yield pool
        finally:
            await pool.close()


async def temporal_client(settings: Settings) -> Client:
    client = await connect(
        settings.temporal_address,
        settings.temporal_namespace,
        tls=settings.temporal_tls,
        api_key=settings.temporal_api_key,
    )
    await register_search_attributes(client)
    return client


async def run_worker(settings: Settings, stop: asyncio.Event, pool: asyncpg.Pool) -> None:
    """Run until `stop` is set; then finish in-flight activity attempts and exit."""
    validate_vendor_settings(settings)
    client = await temporal_client(settings)
    feed = build_market_data(settings, SimulatedFeed(seed=settings.feed_seed))
    sessions = MarketSessions(settings.market_session_mode)
    commission = settings.commission_model()
    venue = PaperVenue(
        pool,
        feed,
        sessions,
        commission,
        latency_ms=settings.venue_latency_ms,
        slippage_bps=settings.venue_slippage_bps,
    )
    broker = build_broker(settings, venue)
    activities = OrderActivities(pool, feed, broker, sessions, commission)
    operations = OperationsActivities(pool, cast(ReconcilableBroker, broker), feed, sessions)
    deliver = temporal_deliver(client)
    relay = OutboxRelay(pool, deliver)

    async def reconcile_open_orders() -> None:
        """After the broker's stream reconnects, every open order re-reads its status."""
        await signal_open_orders(client, pool, "reconcile")

    stream = build_trade_stream(settings, deliver, reconcile_open_orders)
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[OrderWorkflow, *OPERATIONS_WORKFLOWS],
        activities=[*activities.all(), *operations.all()],
        max_concurrent_activities=settings.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=timedelta(seconds=10),
    )
    background = [
        asyncio.create_task(venue.run(stop, tick_ms=settings.venue_tick_ms), name="venue"),
        asyncio.create_task(relay.run(stop, interval_ms=settings.relay_interval_ms), name="relay"),
    ]
    if stream is not None:
        background.append(asyncio.create_task(stream.run(stop), name="alpaca-stream"))
    created = await ensure_schedules(client, settings)
    log.info("schedules in place: %s", ", ".join(created))
    log.info("worker on task queue %s at %s", settings.task_queue, settings.temporal_address)
    async with worker:
        await stop.wait()
        log.info("stopping: finishing in-flight activities")
    await asyncio.gather(*background, return_exceptions=True)


async def signal_open_orders(client: Client, pool: asyncpg.Pool, signal_name: str) -> int:
    """Send `signal_name` to the workflow of every open order; returns how many."""
    async with UnitOfWork(pool) as uow:
        orders = await uow.orders.active()
    sent = 0
    for order in orders:
        try:
            await client.get_workflow_handle(workflow_id_for(order.order_id)).signal(signal_name)
            sent += 1
        except RPCError as err:
            log.warning("could not signal %s to order %s: %s", signal_name, order.order_id, err)
    return sent


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def main(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    stop = asyncio.Event()
    install_signal_handlers(stop)
    async with open_database(settings) as pool:
        await run_worker(settings, stop, pool)
