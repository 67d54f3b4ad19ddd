"""A bare workflow with the order saga's shape, for benchmarks: no I/O at all."""

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bare_step")
async def bare_step(n: int) -> int:
    return n + 1


@workflow.defn(name="BareOrderShape")
class BareOrderShape:
    """The order saga's shape without I/O: four activities, a signal, one more activity."""

    def __init__(self) -> None:
        self.filled = False

    @workflow.run
    async def run(self) -> int:
        n = 0
        for _ in range(4):
            n = await workflow.execute_activity(
                bare_step, n, start_to_close_timeout=timedelta(seconds=10)
            )
        await workflow.wait_condition(lambda: self.filled)
        return await workflow.execute_activity(
            bare_step, n, start_to_close_timeout=timedelta(seconds=10)
        )

    @workflow.signal
    def fill(self) -> None:
        self.filled = True
