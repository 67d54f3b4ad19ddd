"""ProtectionWorkflow: the guard of one protected position (`protection-{portfolio}-{symbol}`).

Every `check_seconds` it reads the position, its stop-loss and take-profit levels (on the
position's row, set by PUT /positions/{symbol}/protection) and the last trade; when a level
is hit it closes what is free of the position at market, as an ordinary child order
(`order-{id}`, client order id `guard-{n}-{symbol}-{portfolio}`: a replay never places it
twice). It ends, and clears the levels, when the position is flat (closed by the guard or
by hand), when trading is HALTED (the kill switch stops guards), or on the `stop` signal.
REDUCING lets its closing orders through: they only reduce. Long-lived: it continues as
new every CHECKS_PER_RUN checks.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError

from workflows.order import OrderWorkflow

with workflow.unsafe.imports_passed_through():
    from activities.protection_activities import ProtectionActivities
    from contracts.payloads import (
        OrderRequest,
        OrderSnapshot,
        OrderWorkflowInput,
        ProtectionCheck,
        ProtectionInput,
        order_id_for,
        workflow_id_for,
    )
    from domain.orders import OrderType, TimeInForce
    from workflows.policies import QUICK, STORE, call

CHECKS_PER_RUN = 500


@workflow.defn(name="ProtectionWorkflow")
class ProtectionWorkflow:
    def __init__(self) -> None:
        self._stop = False
        self._wake = False

    @workflow.run
    async def run(self, input: ProtectionInput) -> str:
        closes = input.closes
        for _ in range(CHECKS_PER_RUN):
            if self._stop:
                await call(ProtectionActivities.clear_protection, input, STORE)
                return "stopped"
            check: ProtectionCheck = await call(ProtectionActivities.check_protection, input, QUICK)
            if check.verdict in ("flat", "halted"):
                await call(ProtectionActivities.clear_protection, input, STORE)
                return check.verdict
            if check.verdict == "unprotected":
                return check.verdict
            if check.verdict in ("stop_loss", "take_profit") and check.closable > 0:
                closes += 1
                await self._close(input, check, closes)
            self._wake = False
            try:
                await workflow.wait_condition(
                    lambda: self._stop or self._wake,
                    timeout=timedelta(seconds=input.check_seconds),
                )
            except TimeoutError:
                pass
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            ProtectionInput(
                input.portfolio_id, input.symbol, input.check_seconds, closes, input.options
            )
        )

    async def _close(self, input: ProtectionInput, check: ProtectionCheck, n: int) -> None:
        assert check.side is not None
        client_order_id = f"guard-{n}-{input.symbol}-{input.portfolio_id}"
        order_id = order_id_for(input.portfolio_id, client_order_id)
        request = OrderRequest(
            order_id=order_id,
            portfolio_id=input.portfolio_id,
            client_order_id=client_order_id,
            symbol=input.symbol,
            side=check.side,
            quantity=check.closable,
            order_type=OrderType.MARKET,
            time_in_force=TimeInForce.DAY,
        )
        workflow.logger.info(
            "guard of %s: %s at %s, closing %s",
            input.symbol,
            check.verdict,
            check.price,
            check.closable,
        )
        try:
            result: OrderSnapshot = await workflow.execute_child_workflow(
                OrderWorkflow.run,
                OrderWorkflowInput(request=request, options=input.options),
                id=workflow_id_for(order_id),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
        except ChildWorkflowError as err:  # compensated: the next check looks again
            workflow.logger.warning("guard of %s: close failed: %s", input.symbol, err)
            return
        workflow.logger.info("guard of %s: close %s", input.symbol, result.status.value)

    @workflow.signal(name="stop")
    def stop(self) -> None:
        """Stop guarding (the levels are removed)."""
        self._stop = True

    @workflow.signal(name="levels_changed")
    def levels_changed(self) -> None:
        """New levels were written: check now instead of at the next tick."""
        self._wake = True


__all__ = ["ProtectionWorkflow"]
