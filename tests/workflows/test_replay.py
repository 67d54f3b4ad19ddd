"""Replays recorded order histories against today's workflow code: a change that would
break running orders (non-determinism) fails here, before it reaches a worker."""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from bootstrap.converter import DATA_CONVERTER
from workflows.order import OrderWorkflow

_HERE = Path(__file__).parent / "histories"
# Recorded from today's code (RECORD_HISTORIES=1 rewrites these): the short store steps run
# as local activities (patch local-store-steps-v2).
CURRENT = sorted(_HERE.glob("*.json"))
# Recorded from the code before that patch, every step a regular activity: orders started
# under it must still replay and finish after the deploy. Never re-recorded.
REGULAR = sorted((_HERE / "regular-activities").glob("*.json"))
HISTORIES = CURRENT + REGULAR


def test_there_are_recorded_histories_to_replay():
    assert len(CURRENT) >= 8, "record them: RECORD_HISTORIES=1 pytest tests/workflows"
    assert len(REGULAR) >= 8, "the histories from before local activities are kept"


def _markers(path: Path) -> list[str]:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    return [
        event.marker_recorded_event_attributes.marker_name
        for event in history.events
        if event.HasField("marker_recorded_event_attributes")
    ]


def test_each_generation_of_histories_takes_its_own_path():
    """The current histories run their store steps as local activities (a patch marker and
    local-activity markers); the older ones have neither, so both paths are replayed."""
    for path in CURRENT:
        assert "core_patch" in _markers(path), path.name
        assert "core_local_activity" in _markers(path), path.name
    for path in REGULAR:
        assert "core_local_activity" not in _markers(path), path.name


@pytest.mark.parametrize("path", HISTORIES, ids=[f"{p.parent.name}/{p.stem}" for p in HISTORIES])
async def test_recorded_history_replays_without_nondeterminism(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[OrderWorkflow], data_converter=DATA_CONVERTER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
