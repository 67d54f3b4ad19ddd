"""`trading replay HISTORY.json`: replay a downloaded workflow history against the
installed workflow code, and say in one line whether it still replays.

The history is the JSON the Temporal UI downloads (*Download* on a workflow page) or
`temporal workflow show -w ID -o json` prints. Every workflow class of the `workflows`
package is registered, with the converter the workers use. A non-determinism names the
first event the code no longer agrees with: found by replaying ever longer prefixes of the
history (the first prefix that fails ends at that event).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import pkgutil
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from temporalio.client import WorkflowHistory
    from temporalio.worker import Replayer

_CORE_MESSAGE = re.compile(r'message: "(?:\[\w+\] )?(.*?)", source')


class HistoryError(ValueError):
    """The file is not a workflow history."""


@dataclass(frozen=True)
class Outcome:
    workflow_id: str
    workflow_type: str
    events: int
    error: str | None = None  # None: replays
    nondeterministic: bool = False
    event_id: int | None = None
    event_type: str | None = None

    def line(self) -> str:
        what = f"{self.workflow_id} ({self.workflow_type}, {self.events} events)"
        if self.error is None:
            return f"ok: {what} replays on the installed code"
        where = ""
        if self.event_id is not None:
            where = f" at event {self.event_id} {self.event_type}"
        label = "NON-DETERMINISTIC" if self.nondeterministic else "FAILED"
        return f"{label}: {what}{where}: {self.error}"


def workflow_classes() -> list[type]:
    """Every workflow definition of the `workflows` package (as the workers register)."""
    import workflows

    found: dict[str, type] = {}
    for module_info in pkgutil.iter_modules(workflows.__path__, "workflows."):
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if isinstance(value, type) and hasattr(value, "__temporal_workflow_definition"):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


def load_history(path: Path, workflow_id: str | None = None) -> WorkflowHistory:
    from temporalio.client import WorkflowHistory

    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise HistoryError(f"cannot read {path}: {err.strerror or err}") from None
    except ValueError as err:
        raise HistoryError(f"{path} is not JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("events"), list) or not data["events"]:
        raise HistoryError(f"{path} is not a workflow history (no events)")
    try:
        return WorkflowHistory.from_json(workflow_id or path.stem, data)
    except Exception as err:  # the protobuf parser's many errors: all mean "not a history"
        raise HistoryError(f"{path} is not a workflow history: {err}") from None


def _type_name(history: WorkflowHistory) -> str:
    first = history.events[0]
    return first.workflow_execution_started_event_attributes.workflow_type.name or "?"


def _replayer() -> Replayer:
    from temporalio.runtime import Runtime, TelemetryConfig
    from temporalio.worker import Replayer

    from bootstrap.converter import DATA_CONVERTER

    return Replayer(
        workflows=workflow_classes(),
        data_converter=DATA_CONVERTER,
        # The core SDK would log the failed workflow task on stderr; the outcome says it.
        runtime=Runtime(telemetry=TelemetryConfig(logging=None, metrics=None)),
    )


async def _fails(replayer: Replayer, history: WorkflowHistory) -> BaseException | None:
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    return result.replay_failure


def _message(failure: BaseException) -> str:
    text = str(failure)
    found = _CORE_MESSAGE.search(text)
    text = found.group(1) if found else text
    return " ".join(text.split())


async def replay(path: Path, workflow_id: str | None = None) -> Outcome:
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import WorkflowHistory
    from temporalio.workflow import NondeterminismError

    history = load_history(path, workflow_id)
    replayer = _replayer()
    outcome = Outcome(history.workflow_id, _type_name(history), len(history.events))
    failure = await _fails(replayer, history)
    if failure is None:
        return outcome
    nondeterministic = isinstance(failure, NondeterminismError)
    event_id = event_type = None
    if nondeterministic:
        # The shortest failing prefix ends at the first event the code disagrees with.
        low, high = 1, len(history.events)
        while low < high:
            middle = (low + high) // 2
            prefix = WorkflowHistory(history.workflow_id, list(history.events[:middle]))
            if await _fails(replayer, prefix) is None:
                low = middle + 1
            else:
                high = middle
        event = history.events[low - 1]
        event_id = event.event_id
        event_type = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
    return Outcome(
        outcome.workflow_id,
        outcome.workflow_type,
        outcome.events,
        error=_message(failure),
        nondeterministic=nondeterministic,
        event_id=event_id,
        event_type=event_type,
    )


def _command(args: argparse.Namespace) -> int:
    # The SDK's own warnings about the failed task would repeat the outcome line.
    logging.getLogger("temporalio").setLevel(logging.CRITICAL)
    try:
        outcome = asyncio.run(replay(args.history, args.workflow_id))
    except HistoryError as err:
        print(f"trading replay: {err}", file=sys.stderr)
        return 2
    print(outcome.line())
    return 0 if outcome.error is None else 1


def register(subparsers: Any) -> None:
    """Add `replay` to `trading`."""
    command = subparsers.add_parser(
        "replay",
        help="replay a downloaded workflow history against the installed code",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("history", type=Path, metavar="HISTORY.json")
    command.add_argument(
        "--workflow-id", help="the workflow id to report (default: the file's name)"
    )
    command.set_defaults(handler=_command)
