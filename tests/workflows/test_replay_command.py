"""`trading replay HISTORY.json` says in one line whether a downloaded history replays on
the installed code: every recorded history does; a history the code disagrees with names
the event; a file that is no history is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.cli import main
from worker.replay import workflow_classes

_HERE = Path(__file__).parent / "histories"
HISTORIES = sorted(_HERE.glob("*.json")) + sorted((_HERE / "regular-activities").glob("*.json"))
# From before local activities: its first scheduled activity is the quote.
MARKET = (
    _HERE
    / "regular-activities"
    / "test_market_order_fills_at_the_ask_and_updates_position_and_cash-0.json"
)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["replay", *argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("path", HISTORIES, ids=[f"{p.parent.name}/{p.stem}" for p in HISTORIES])
def test_every_recorded_history_replays_ok(path: Path, capsys: pytest.CaptureFixture[str]):
    status, out, err = run(capsys, str(path))
    assert (status, err) == (0, "")
    assert (
        out == f"ok: {path.stem} (OrderWorkflow, {len(json.loads(path.read_text())['events'])}"
        " events) replays on the installed code\n"
    )


def test_a_changed_history_is_reported_non_deterministic_at_its_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    history = json.loads(MARKET.read_text())
    scheduled = next(
        e for e in history["events"] if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"
    )
    scheduled["activityTaskScheduledEventAttributes"]["activityType"]["name"] = "renamed"
    broken = tmp_path / "order-broken.json"
    broken.write_text(json.dumps(history))

    status, out, err = run(capsys, str(broken), "--workflow-id", "order-123")

    assert status == 1 and err == "" and out.count("\n") == 1
    assert out.startswith(
        f"NON-DETERMINISTIC: order-123 (OrderWorkflow, {len(history['events'])} events) "
        f"at event {scheduled['eventId']} ACTIVITY_TASK_SCHEDULED: "
    )
    assert "'renamed'" in out and "'get_quote'" in out


def test_a_history_in_the_ui_download_format_replays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Older Temporal UIs write event types as `WorkflowExecutionStarted` and ids as
    numbers."""
    history = json.loads(MARKET.read_text())
    for event in history["events"]:
        words = event["eventType"].removeprefix("EVENT_TYPE_").split("_")
        event["eventType"] = "".join(word.capitalize() for word in words)
        event["eventId"] = int(event["eventId"])
    path = tmp_path / "history.json"
    path.write_text(json.dumps(history))

    status, out, _ = run(capsys, str(path))

    assert status == 0 and out.startswith("ok: history (OrderWorkflow, ")


@pytest.mark.parametrize(
    "content, reason",
    [(None, "cannot read"), ("not json", "is not JSON"), ('{"events": []}', "no events")],
)
def test_a_file_that_is_no_history_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, reason: str
):
    path = tmp_path / "history.json"
    if content is not None:
        path.write_text(content)
    status, out, err = run(capsys, str(path))
    assert (status, out) == (2, "") and err.count("\n") == 1
    assert err.startswith("trading replay: ") and reason in err


def test_every_workflow_the_workers_run_is_registered_for_replay():
    names = {cls.__name__ for cls in workflow_classes()}
    assert {"OrderWorkflow", "ReconciliationWorkflow", "SnapshotWorkflow"} <= names
    assert "TradingStateWorkflow" in names
