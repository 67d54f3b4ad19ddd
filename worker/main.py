"""Composition root of the worker: build every adapter by hand and run the Temporal worker,
the paper venue's matching loop and the outbox relay until asked to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

import asyncpg
from temporalio.worker import Worker

from activities.bracket_activities import BracketActivities
from activities.calendar.sessions import MarketSessions
from activities.market_data.simulated import SimulatedFeed
from activities.operations_activities import OperationsActivities
from activities.order_activities import OrderActivities
from activities.parent_activities import ParentActivities
from activities.protection_activities import ProtectionActivities
from activities.strategy_activities import StrategyActivities
from activities.venue.exchange import PaperVenue
from activities.venue.outbox import OutboxRelay, temporal_deliver
from bootstrap.control import reconcile_open_orders
from bootstrap.heartbeat import HeartbeatInterceptor
from bootstrap.logs import LogContextWorkerInterceptor, configure_logging
from bootstrap.resources import open_database, temporal_client
from bootstrap.settings import Settings
from bootstrap.strategies import load_strategy
from bootstrap.tracing import instrument_asyncpg, traced_client, tracer_provider
from bootstrap.vendors import (
    build_broker,
    build_market_data,
    build_trade_stream,
    validate_vendor_settings,
)
from worker.metrics_server import install_sdk_runtime, serve_worker_metrics
from worker.schedules import ensure_schedules
from workflows.bracket import BracketWorkflow
from workflows.operations import WORKFLOWS as OPERATIONS_WORKFLOWS
from workflows.order import OrderWorkflow
from workflows.parent import ParentOrderWorkflow
from workflows.protection import ProtectionWorkflow
from workflows.strategy import StrategyRunWorkflow

log = logging.getLogger("trading.worker")


async def run_worker(settings: Settings, stop: asyncio.Event, pool: asyncpg.Pool) -> None:
    """Run until `stop` is set; then finish in-flight activity attempts and exit."""
    validate_vendor_settings(settings)
    tracing = tracer_provider(settings, "trading-worker")  # None unless TRACING is set
    instrument_asyncpg(tracing)
    client = traced_client(await temporal_client(settings), tracing)
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
    operations = OperationsActivities(pool, broker, feed, sessions)
    strategies = StrategyActivities(pool, feed, sessions, commission, loader=load_strategy)
    parents = ParentActivities(pool, feed, sessions, commission)
    brackets = BracketActivities(pool, sessions, commission)
    guards = ProtectionActivities(pool, feed)
    deliver = temporal_deliver(client, pool)
    relay = OutboxRelay(pool, deliver)

    async def after_reconnect() -> None:
        """After the broker's stream reconnects, every open order re-reads its status."""
        await reconcile_open_orders(client, pool)

    stream = build_trade_stream(settings, deliver, after_reconnect)
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[
            OrderWorkflow,
            ParentOrderWorkflow,
            BracketWorkflow,
            ProtectionWorkflow,
            StrategyRunWorkflow,
            *OPERATIONS_WORKFLOWS,
        ],
        activities=[
            *activities.all(),
            *operations.all(),
            *strategies.all(),
            *parents.all(),
            *brackets.all(),
            *guards.all(),
        ],
        max_concurrent_activities=settings.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=timedelta(seconds=10),
        # A workflow task queued for a worker that died moves to the shared queue after 3 s
        # (the SDK's default is 10 s), where any worker replays the order and goes on.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=3),
        # Request and order ids in the logs; heartbeats so a dead worker's attempts are retried
        # in seconds.
        interceptors=[LogContextWorkerInterceptor(), HeartbeatInterceptor()],
    )
    background = [
        asyncio.create_task(venue.run(stop, tick_ms=settings.venue_tick_ms), name="venue"),
        asyncio.create_task(relay.run(stop, interval_ms=settings.relay_interval_ms), name="relay"),
    ]
    if stream is not None:
        background.append(asyncio.create_task(stream.run(stop), name="alpaca-stream"))
    for task in background:
        task.add_done_callback(_report_if_it_died)
    created = await ensure_schedules(client, settings)
    log.info("schedules in place: %s", ", ".join(created))
    log.info("worker on task queue %s at %s", settings.task_queue, settings.temporal_address)
    async with worker:
        await stop.wait()
        log.info("stopping: finishing in-flight activities")
    await asyncio.gather(*background, return_exceptions=True)


def _report_if_it_died(task: asyncio.Task[None]) -> None:
    """A background loop (venue, relay, stream) must run until stop; if one ends on an
    error, say so at once instead of only at shutdown."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped on an error", task.get_name(), exc_info=task.exception())


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def main(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    stop = asyncio.Event()
    install_signal_handlers(stop)
    configure_logging(settings)
    sdk_metrics = install_sdk_runtime()  # before the first Temporal client
    async with open_database(settings) as pool:
        with serve_worker_metrics(settings, pool, sdk_metrics):
            await run_worker(settings, stop, pool)
