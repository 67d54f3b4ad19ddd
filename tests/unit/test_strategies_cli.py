"""The live strategy schedule: in market hours, overlap SKIP, the strategy workflow."""

from __future__ import annotations

from uuid import uuid4

import pytest
from temporalio.client import ScheduleOverlapPolicy

from contracts.strategies import StrategyRunInput
from worker.schedules import intraday_times
from worker.strategy_cli import InputError, _every_minutes, schedule_id, strategy_schedule


def test_every_accepts_divisors_of_an_hour():
    assert [_every_minutes(t) for t in ("1m", "5m", "15m", "30m", "1h")] == [1, 5, 15, 30, 60]
    for bad in ("7m", "2h", "5", "m5", "90m"):
        with pytest.raises(InputError):
            _every_minutes(bad)


def test_the_schedule_runs_the_strategy_workflow_in_the_session_and_skips_overlaps():
    run = StrategyRunInput(strategy="sma_crossover", symbols=["AAPL"], portfolio_id=uuid4())
    schedule = strategy_schedule(run, 5, True, "trading-orders", schedule_id("sma_crossover", None))
    assert schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
    assert schedule.spec.calendars == intraday_times(True, 5)  # weekdays 09:35-15:55 NY
    assert schedule.spec.time_zone_name == "America/New_York"
    action = schedule.action
    assert action.workflow == "StrategyRunWorkflow" and action.args == [run]
    assert action.id == "strategy-sma_crossover-run"
    assert schedule_id("pkg.mod:Cls", None) == "strategy-pkg.mod-Cls"
