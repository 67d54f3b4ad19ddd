"""The schedules on a real Temporal dev server (the time-skipping one has no Schedules API).

Created idempotently; a backfilled trading day runs one reconciliation and the due
snapshots, once however often it is backfilled.
"""

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from temporalio.client import (
    Client,
    ScheduleBackfill,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
)
from temporalio.worker import Worker

from activities.calendar.sessions import NEW_YORK, MarketSessions
from activities.market_data.simulated import SimulatedFeed
from activities.operations_activities import OperationsActivities
from activities.store import ledger
from activities.store.repositories import UnitOfWork
from activities.venue.exchange import PaperVenue
from bootstrap.temporal import connect
from domain.commissions import PerShare
from domain.market import Timeframe
from domain.orders import Fill, Order, OrderSide
from domain.portfolio import Portfolio
from worker import operator_cli as operator
from worker.devserver import DevServer
from worker.schedules import (
    RECONCILIATION,
    SNAPSHOTS_EOD,
    SNAPSHOTS_INTRADAY,
    ensure_schedules,
    intraday_times,
)
from workflows.operations import WORKFLOWS

pytestmark = pytest.mark.integration

SCHEDULES = (RECONCILIATION, SNAPSHOTS_EOD, SNAPSHOTS_INTRADAY)
BY_SCHEDULE = "TemporalScheduledById IN ({})".format(", ".join(f'"{s}"' for s in SCHEDULES))


@dataclass
class ScheduleConfig:
    task_queue: str
    market_session_mode: str = "calendar"
    snapshot_interval_minutes: int = 60


@pytest.fixture(scope="module")
async def dev_server() -> AsyncIterator[DevServer]:
    async with DevServer(port=0, ui_port=None, db_file=None) as server:
        yield server


@pytest.fixture
async def dev_client(dev_server) -> Client:
    return await connect(dev_server.address)


async def _closed(client: Client, expected: int, timeout: float = 20.0) -> None:
    """Wait until `expected` runs started by the schedules have completed."""
    deadline = time.monotonic() + timeout
    while True:
        done = await client.count_workflows(f'{BY_SCHEDULE} AND ExecutionStatus="Completed"')
        if done.count >= expected:
            assert done.count == expected
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{done.count} of {expected} scheduled runs completed")
        await asyncio.sleep(0.1)


async def _backfill(client: Client, day: datetime) -> None:
    start, end = day - timedelta(seconds=1), day + timedelta(days=1) - timedelta(seconds=1)
    for schedule_id in SCHEDULES:
        # ALLOW_ALL: a backfill's runs start at once, not one after another.
        await client.get_schedule_handle(schedule_id).backfill(
            ScheduleBackfill(start, end, overlap=ScheduleOverlapPolicy.ALLOW_ALL)
        )


async def _portfolio_holding(pool, symbol: str, quantity: str, price: str) -> Portfolio:
    portfolio = Portfolio(initial_capital=D("100000.00"), name="holder")
    order = Order(
        symbol=symbol, quantity=D(quantity), side=OrderSide.BUY, portfolio_id=portfolio.id
    )
    order.submit("seed")
    portfolio.apply_fill(
        order, Fill("seed-1", D(quantity), D(price), executed_at=datetime.now(UTC))
    )
    await ledger.create_portfolio(pool, portfolio)
    async with UnitOfWork(pool) as uow:
        await uow.portfolios.save(portfolio)
        await uow.commit()
    return portfolio


async def test_a_backfilled_trading_day_runs_one_reconciliation_and_the_due_snapshots_once(
    dev_client, db_pool
):
    config = ScheduleConfig(task_queue=f"operations-{uuid.uuid4()}")
    assert await ensure_schedules(dev_client, config) == list(SCHEDULES)
    for schedule_id in SCHEDULES:  # only the backfills run, whatever the wall clock says
        await dev_client.get_schedule_handle(schedule_id).pause()
    feed = SimulatedFeed(seed=7)
    sessions = MarketSessions("calendar")
    venue = PaperVenue(db_pool, feed, sessions, PerShare())
    activities = OperationsActivities(db_pool, venue, feed, sessions)
    flat = Portfolio(initial_capital=D("50000.00"), name="flat")
    await ledger.create_portfolio(db_pool, flat)
    holder = await _portfolio_holding(db_pool, "AAPL", "10", "200.00")

    async with Worker(
        dev_client, task_queue=config.task_queue, workflows=WORKFLOWS, activities=activities.all()
    ):
        wednesday = datetime(2026, 11, 18, tzinfo=NEW_YORK)
        await _backfill(dev_client, wednesday)
        await _closed(dev_client, 8)  # 6 intraday (10:00-15:00), 1 at the close, 1 after
        await _backfill(dev_client, wednesday)  # again: new runs, no new rows
        await _closed(dev_client, 16)

        thanksgiving = datetime(2026, 11, 26, tzinfo=NEW_YORK)
        await _backfill(dev_client, thanksgiving)  # the schedules fire; the calendar says no
        await _closed(dev_client, 24)

    assert await db_pool.fetchval("SELECT count(*) FROM reconciliation_reports") == 1
    report = await db_pool.fetchrow("SELECT run_at, status FROM reconciliation_reports")
    assert report["run_at"] == datetime(2026, 11, 18, 21, 30, tzinfo=UTC)  # 16:30 New York
    assert report["status"] == "discrepancies"  # the seeded position never went through the venue
    rows = await db_pool.fetch(
        "SELECT portfolio_id, taken_at, kind, equity, positions_value "
        "FROM portfolio_snapshots ORDER BY portfolio_id, taken_at"
    )
    assert len(rows) == 14
    for portfolio in (flat, holder):
        mine = [r for r in rows if r["portfolio_id"] == portfolio.id]
        assert [(r["taken_at"].astimezone(NEW_YORK).hour, r["kind"]) for r in mine] == [
            (10, "intraday"), (11, "intraday"), (12, "intraday"), (13, "intraday"),
            (14, "intraday"), (15, "intraday"), (16, "eod"),
        ]  # fmt: skip
    assert {r["equity"] for r in rows if r["portfolio_id"] == flat.id} == {D("50000.00")}
    # Valued at the scheduled instant, not when the backfill ran.
    close = datetime(2026, 11, 18, 16, tzinfo=NEW_YORK)
    (bar,) = await feed.get_bars("AAPL", Timeframe.MINUTE_1, 1, end=close)
    eod = next(r for r in rows if r["portfolio_id"] == holder.id and r["kind"] == "eod")
    assert eod["positions_value"] == 10 * bar.close


async def test_ensure_schedules_updates_in_place_and_keeps_an_operator_pause(dev_client):
    config = ScheduleConfig(task_queue="first-queue", market_session_mode="always_open")
    await ensure_schedules(dev_client, config)
    await dev_client.get_schedule_handle(RECONCILIATION).pause(note="broker maintenance")
    config.task_queue = "second-queue"
    await ensure_schedules(dev_client, config)

    described = await dev_client.get_schedule_handle(RECONCILIATION).describe()
    assert described.schedule.state.paused and described.schedule.state.note == "broker maintenance"
    assert described.schedule.action.task_queue == "second-queue"
    policy = described.schedule.policy
    assert (policy.overlap, policy.catchup_window) == (
        ScheduleOverlapPolicy.SKIP,
        timedelta(days=4),
    )
    assert described.schedule.spec.time_zone_name == "America/New_York"
    for schedule_id, catchup in ((SNAPSHOTS_EOD, 7), (SNAPSHOTS_INTRADAY, 1)):
        policy = (await dev_client.get_schedule_handle(schedule_id).describe()).schedule.policy
        assert policy.overlap is ScheduleOverlapPolicy.BUFFER_ALL
        assert policy.catchup_window == timedelta(days=catchup)
    listed = [s.id async for s in await dev_client.list_schedules()]
    assert sorted(listed) == sorted(SCHEDULES)  # updated, never duplicated


def _times_a_day(specs: list[ScheduleCalendarSpec]) -> int:
    def count(ranges) -> int:
        return sum(len(range(r.start, max(r.start, r.end) + 1, r.step or 1)) for r in ranges)

    return sum(count(spec.hour) * count(spec.minute) for spec in specs)


def test_intraday_snapshots_cover_the_session_every_interval():
    assert _times_a_day(intraday_times(calendar_mode=True, every=15)) == 25  # 09:45-15:45
    assert _times_a_day(intraday_times(calendar_mode=True, every=60)) == 6  # 10:00-15:00
    assert _times_a_day(intraday_times(calendar_mode=False, every=15)) == 96
    with pytest.raises(ValueError):
        intraday_times(calendar_mode=True, every=25)


async def test_the_worker_healthcheck_needs_a_worker_polling_from_this_host(
    dev_server, dev_client, monkeypatch
):
    queue = f"health-{uuid.uuid4()}"
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_server.address)
    monkeypatch.setenv("TASK_QUEUE", queue)
    parser = argparse.ArgumentParser()
    operator.register(parser.add_subparsers())
    health = parser.parse_args(["health"])

    def check() -> Awaitable[int]:  # the command runs its own event loop, as in a container
        return asyncio.to_thread(health.handler, health)

    assert await check() == 1
    async with Worker(dev_client, task_queue=queue, workflows=WORKFLOWS):
        deadline = time.monotonic() + 10
        while await check() != 0:
            assert time.monotonic() < deadline, "the healthcheck never saw the worker"
            await asyncio.sleep(0.2)
