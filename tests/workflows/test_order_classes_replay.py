"""Replays the recorded histories of parent orders (TWAP, VWAP, brackets, OCO) and position
guards (tests/workflows/histories/order_classes, recorded by
tests/workflows/test_order_classes.py, tests/workflows/test_brackets.py and
tests/api/test_order_classes.py with RECORD_HISTORIES=1) against today's code: a change
that would break a running parent or guard fails here."""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from bootstrap.converter import DATA_CONVERTER
from workflows.bracket import BracketWorkflow
from workflows.order import OrderWorkflow
from workflows.parent import ParentOrderWorkflow
from workflows.protection import ProtectionWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories" / "order_classes").glob("*.json"))


def test_there_are_recorded_parent_histories_to_replay():
    assert len(HISTORIES) >= 4, "record them: RECORD_HISTORIES=1 pytest tests/workflows"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_parent_history_replays_without_nondeterminism(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(
        workflows=[ParentOrderWorkflow, ProtectionWorkflow, BracketWorkflow, OrderWorkflow],
        data_converter=DATA_CONVERTER,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
