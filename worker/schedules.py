"""The Temporal schedules of the trading day, created or updated at every start.

Times are New York wall-clock times (the schedules carry the time zone, so daylight saving
moves nothing). In `calendar` session mode they fire Monday to Friday and the workflows ask
the exchange calendar about holidays and early closes; in `always_open` mode every day.

| schedule                     | when                                   | overlap    | catch-up |
|------------------------------|----------------------------------------|------------|----------|
| trading-reconciliation       | 16:30                                  | SKIP       | 4 days   |
| trading-snapshots-eod        | 16:00                                  | BUFFER_ALL | 7 days   |
| trading-snapshots-intraday   | every N minutes in 09:30-16:00 (always | BUFFER_ALL | 1 day    |
|                              | open: all day), N = SNAPSHOT_INTERVAL_ |            |          |
|                              | MINUTES, default 15                    |            |          |

Why: a reconciliation compares the state *now*, so after an outage one catch-up run covers
every missed close (SKIP drops the rest while it runs), and four days span a long weekend.
A snapshot is valued at its own scheduled instant (see activities/operations.py), so every
missed one is worth taking late: BUFFER_ALL runs them one after another.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Protocol

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from contracts.payloads import ReconciliationInput, SnapshotInput, SnapshotKind
from workflows.operations import ReconciliationWorkflow, SnapshotWorkflow

log = logging.getLogger(__name__)

RECONCILIATION = "trading-reconciliation"
SNAPSHOTS_EOD = "trading-snapshots-eod"
SNAPSHOTS_INTRADAY = "trading-snapshots-intraday"
TIME_ZONE = "America/New_York"

WEEKDAYS = (ScheduleRange(1, 5),)  # 0 is Sunday
EVERY_DAY = (ScheduleRange(0, 6),)


class ScheduleSettings(Protocol):
    """The settings the schedules depend on (worker.settings.Settings has them)."""

    @property
    def task_queue(self) -> str: ...
    @property
    def market_session_mode(self) -> str: ...
    @property
    def snapshot_interval_minutes(self) -> int: ...


def _at(
    hour: int, minute: int, days: tuple[ScheduleRange, ...], comment: str
) -> ScheduleCalendarSpec:
    return ScheduleCalendarSpec(
        hour=(ScheduleRange(hour),),
        minute=(ScheduleRange(minute),),
        day_of_week=days,
        comment=comment,
    )


def intraday_times(calendar_mode: bool, every: int) -> list[ScheduleCalendarSpec]:
    """Every `every` minutes (a divisor of 60) within the regular session, 09:30 excluded
    (nothing has traded yet) and 16:00 excluded (the end-of-day snapshot's instant)."""
    if not 1 <= every <= 60 or 60 % every:
        raise ValueError(f"the snapshot interval must divide an hour, got {every} minutes")
    minutes = (ScheduleRange(0, 59, every),)
    if not calendar_mode:
        return [
            ScheduleCalendarSpec(
                hour=(ScheduleRange(0, 23),), minute=minutes, day_of_week=EVERY_DAY
            )
        ]
    specs = [
        ScheduleCalendarSpec(
            hour=(ScheduleRange(10, 15),),
            minute=minutes,
            day_of_week=WEEKDAYS,
            comment="in the session",
        )
    ]
    if 30 + every <= 59:
        first_hour = (ScheduleRange(30 + every, 59, every),)
        specs.insert(
            0,
            ScheduleCalendarSpec(
                hour=(ScheduleRange(9),),
                minute=first_hour,
                day_of_week=WEEKDAYS,
                comment="after the open",
            ),
        )
    return specs


def schedules(settings: ScheduleSettings) -> dict[str, Schedule]:
    """The schedules by id, as `settings` wants them."""
    calendar_mode = settings.market_session_mode == "calendar"
    days = WEEKDAYS if calendar_mode else EVERY_DAY
    every = settings.snapshot_interval_minutes
    queue = settings.task_queue
    return {
        RECONCILIATION: Schedule(
            action=ScheduleActionStartWorkflow(
                ReconciliationWorkflow.run,
                ReconciliationInput(),
                id="reconciliation",
                task_queue=queue,
                execution_timeout=timedelta(hours=6),
            ),
            spec=ScheduleSpec(
                calendars=[_at(16, 30, days, "after the close")], time_zone_name=TIME_ZONE
            ),
            policy=SchedulePolicy(
                overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(days=4)
            ),
        ),
        SNAPSHOTS_EOD: Schedule(
            action=ScheduleActionStartWorkflow(
                SnapshotWorkflow.run,
                SnapshotInput(kind=SnapshotKind.EOD),
                id="snapshot-eod",
                task_queue=queue,
                execution_timeout=timedelta(hours=1),
            ),
            spec=ScheduleSpec(
                calendars=[_at(16, 0, days, "at the close")], time_zone_name=TIME_ZONE
            ),
            policy=SchedulePolicy(
                overlap=ScheduleOverlapPolicy.BUFFER_ALL, catchup_window=timedelta(days=7)
            ),
        ),
        SNAPSHOTS_INTRADAY: Schedule(
            action=ScheduleActionStartWorkflow(
                SnapshotWorkflow.run,
                SnapshotInput(kind=SnapshotKind.INTRADAY),
                id="snapshot-intraday",
                task_queue=queue,
                execution_timeout=timedelta(hours=1),
            ),
            spec=ScheduleSpec(
                calendars=intraday_times(calendar_mode, every), time_zone_name=TIME_ZONE
            ),
            policy=SchedulePolicy(
                overlap=ScheduleOverlapPolicy.BUFFER_ALL, catchup_window=timedelta(days=1)
            ),
        ),
    }


async def ensure_schedules(client: Client, settings: ScheduleSettings) -> list[str]:
    """Create the schedules, or bring existing ones up to date; their ids.

    Safe from several processes at once and at every start. An update keeps the
    schedule's state: one an operator paused stays paused.
    """
    wanted = schedules(settings)
    for schedule_id, schedule in wanted.items():
        try:
            await client.create_schedule(schedule_id, schedule)
            log.info("created schedule %s", schedule_id)
        except ScheduleAlreadyRunningError:

            def replace(current: ScheduleUpdateInput, new: Schedule = schedule) -> ScheduleUpdate:
                new.state = current.description.schedule.state or ScheduleState()
                return ScheduleUpdate(schedule=new)

            await client.get_schedule_handle(schedule_id).update(replace)
            log.info("updated schedule %s", schedule_id)
    return list(wanted)
