"""How a placement's first workflow task reaches a worker, at 50 concurrent callers: the
three ways POST /orders could ask Temporal for an answer, on a trivial workflow, so none of
the order saga's own work is in the figures.

    .venv/bin/python bench/first_task_bench.py [--clients 50] [--requests 20] [--partitions 4]

* update-with-start: what the API does (start, or join, and wait for the `decide` update);
* eager start + update: Eager Workflow Start (the server hands the first workflow task back
  in the start response, to the worker in this process), then the update;
* start only: a bare `start_workflow`, the floor, which waits for no workflow task.

Starts the dev server (tuned as `make up` runs it; `--partitions 4` restores the server's
default of four partitions per task queue) and one worker in this process. The worker runs
in the callers' process, as eager start requires.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from api_bench import percentile  # bench/, this script's folder
from temporalio import workflow
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from bootstrap.temporal import connect
from worker import devserver
from worker.devserver import DevServer


@workflow.defn(name="BenchFirstTask")
class FirstTask:
    """Decides in its first task, answers `decide` once decided, then idles."""

    def __init__(self) -> None:
        self.decided = False

    @workflow.run
    async def run(self) -> None:
        self.decided = True
        await workflow.wait_condition(lambda: False, timeout=60)

    @workflow.update
    async def decide(self) -> int:
        await workflow.wait_condition(lambda: self.decided)
        return 1


def summary(label: str, ms: list[float], elapsed: float) -> str:
    ms.sort()
    p95, p99 = percentile(ms, 0.95), percentile(ms, 0.99)
    return (
        f"{label:<26} p50 {statistics.median(ms):7.0f}  p95 {p95:7.0f}  p99 {p99:7.0f}  "
        f"max {ms[-1]:7.0f} ms  {len(ms) / elapsed:5.1f}/s"
    )


async def measure(client: Client, queue: str, mode: str, clients: int, requests: int) -> str:
    samples: list[float] = []

    async def one() -> None:
        workflow_id = f"first-{uuid.uuid4()}"
        began = time.perf_counter()
        if mode == "update-with-start":
            start = WithStartWorkflowOperation(
                FirstTask.run,
                id=workflow_id,
                task_queue=queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
            await client.execute_update_with_start_workflow(
                FirstTask.decide, start_workflow_operation=start
            )
        elif mode == "eager start + update":
            handle = await client.start_workflow(
                FirstTask.run, id=workflow_id, task_queue=queue, request_eager_start=True
            )
            await handle.execute_update(FirstTask.decide)
        else:
            await client.start_workflow(FirstTask.run, id=workflow_id, task_queue=queue)
        samples.append((time.perf_counter() - began) * 1000)

    async def caller() -> None:
        for _ in range(requests):
            await one()

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(clients)))
    return summary(mode, samples, time.perf_counter() - began)


async def main(clients: int, requests: int, partitions: int) -> None:
    if partitions != 1:
        devserver.TUNING = tuple(
            value.replace("Partitions=1", f"Partitions={partitions}") for value in devserver.TUNING
        )
    with tempfile.TemporaryDirectory() as tmp:
        async with DevServer(Path(tmp) / "temporal.db", port=0, ui_port=None) as server:
            client = await connect(server.address)
            queue = f"first-task-{uuid.uuid4()}"
            async with Worker(
                client,
                task_queue=queue,
                workflows=[FirstTask],
                workflow_runner=UnsandboxedWorkflowRunner(),
            ):
                print(f"{clients} callers x {requests} each, {partitions} partition(s)")
                for mode in ("update-with-start", "eager start + update", "start only"):
                    print(await measure(client, queue, mode, clients, requests), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--partitions", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.requests, args.partitions))
