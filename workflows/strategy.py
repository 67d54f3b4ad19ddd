"""StrategyRunWorkflow: one run of a strategy, live or over history.

Live (a Temporal Schedule starts one run every N minutes, overlap SKIP): outside the market
session the run is skipped; under the kill switch (HALTED) it places nothing; otherwise it
reads the latest bars of each symbol through the market-data activity, asks the strategy
(pure code from domain.strategies, run here: it is deterministic) for a target, and trades
towards it: the closing order first, then the opening order sized by the domain's sizing
at the current quote. Every order is an ordinary OrderWorkflow (child workflow, id
`order-<order id>`, abandoned rather than cancelled if the run ends), so it goes through
risk, the ledger, the broker and reconciliation like any other, and shows in the UI and
the API. The run report, with the strategy and reason of each order, goes to the store.

Replay (a backtest): the same steps for every bar the replay venue holds, in order: after
bar t closes the strategy decides; a trade moves the replay clock to bar t+1's open and
places the same OrderWorkflows, which fill there. Nothing about an order is different.
"""

from __future__ import annotations

from decimal import Decimal
from uuid import NAMESPACE_URL, uuid5

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError

from workflows.order import OrderWorkflow

with workflow.unsafe.imports_passed_through():
    from activities.strategy_activities import StrategyActivities
    from contracts.payloads import (
        OrderRequest,
        OrderSnapshot,
        OrderWorkflowInput,
        order_id_for,
        workflow_id_for,
    )
    from contracts.strategies import (
        BarsRequest,
        OpeningRequest,
        PortfolioView,
        ReplayBarsRequest,
        ReplayProgress,
        RunStatus,
        StrategyOrder,
        StrategyRef,
        StrategyRunInput,
        StrategyRunReport,
    )
    from domain.errors import ValidationError
    from domain.market import Bar
    from domain.orders import OrderSide, OrderStatus, OrderType, TimeInForce
    from domain.strategies import Exposure, Strategy, StrategyState, Target, closing_order
    from domain.strategies.registry import build
    from workflows.policies import QUICK, STORE, call

REPLAY_CHUNK = 2000  # bars per replay_bars call (keeps each payload well under the limits)
CLIENT_ORDER_IDS = uuid5(NAMESPACE_URL, "trading:strategy-orders")


@workflow.defn(name="StrategyRunWorkflow")
class StrategyRunWorkflow:
    def __init__(self) -> None:
        self._progress = ReplayProgress(0, 0)
        self._orders: list[StrategyOrder] = []

    @workflow.query(name="progress")
    def progress(self) -> ReplayProgress:
        """Bars walked so far and in all (a backtest's progress bar reads this)."""
        return self._progress

    @workflow.run
    async def run(self, input: StrategyRunInput) -> StrategyRunReport:
        run_id = input.run_id or workflow.info().workflow_id
        # Checked (and a user's class imported) by the worker first: an unknown strategy or
        # parameter fails the run there, with one line.
        await call(
            StrategyActivities.load_strategy, StrategyRef(input.strategy, input.params), QUICK
        )
        try:
            strategy = build(input.strategy, input.params)
        except ValidationError as err:
            # Loaded by another worker process, not this one: fail the workflow task (it is
            # retried) rather than the run.
            raise RuntimeError(f"strategy not loaded in this worker: {err}") from None
        report = StrategyRunReport(
            run_id=run_id,
            strategy=input.strategy,
            params=dict(input.params),
            symbols=list(input.symbols),
            portfolio_id=input.portfolio_id,
            status=RunStatus.COMPLETED,
            started_at=workflow.now(),
            finished_at=workflow.now(),
        )
        if input.replay:
            await self._replay(input, strategy, report)
        else:
            await self._live(input, strategy, report)
        report.orders = list(self._orders)
        report.finished_at = workflow.now()
        await call(StrategyActivities.record_run, report, STORE)
        return report

    # -- live -------------------------------------------------------------------------------

    async def _live(
        self, input: StrategyRunInput, strategy: Strategy, report: StrategyRunReport
    ) -> None:
        if not await call(StrategyActivities.session_open, workflow.now(), QUICK):
            report.status, report.note = RunStatus.SKIPPED, "outside the market session"
            return
        view = await call(StrategyActivities.portfolio, input.portfolio_id, STORE)
        if view.trading_state == "halted":
            report.status, report.note = RunStatus.HALTED, "trading is halted: no orders placed"
            return
        bars_wanted = max(input.bars, strategy.history)
        decided = 0
        for symbol in input.symbols:
            bars = await call(
                StrategyActivities.market_bars,
                BarsRequest(symbol, input.timeframe, bars_wanted),
                QUICK,
            )
            if len(bars) < strategy.history:
                continue
            decided += 1
            target = strategy.decide(self._state(symbol, bars, strategy, view))
            if target is not None:
                stamp = bars[-1].start.isoformat()
                await self._trade(
                    input, f"{run_id_of(input)}|{symbol}|{stamp}", symbol, target, view
                )
        report.bars = decided
        if decided == 0:
            report.status, report.note = RunStatus.NO_DATA, "not enough bars for any symbol"

    # -- replay (backtests) -----------------------------------------------------------------

    async def _replay(
        self, input: StrategyRunInput, strategy: Strategy, report: StrategyRunReport
    ) -> None:
        series: dict[str, list[Bar]] = {}
        for symbol in input.symbols:
            bars: list[Bar] = []
            while True:
                chunk = await call(
                    StrategyActivities.replay_bars,
                    ReplayBarsRequest(symbol, len(bars), REPLAY_CHUNK),
                    QUICK,
                )
                bars.extend(chunk)
                if len(chunk) < REPLAY_CHUNK:
                    break
            series[symbol] = bars
        total = min(len(bars) for bars in series.values())
        self._progress = ReplayProgress(0, total)
        view = await call(StrategyActivities.portfolio, input.portfolio_id, STORE)
        history = strategy.history
        cursor = 0
        for t in range(total - 1):  # a decision on the last bar has no next bar to trade on
            self._progress = ReplayProgress(t + 1, total)
            for symbol in input.symbols:
                window = series[symbol][max(0, t + 1 - history) : t + 1]
                target = strategy.decide(self._state(symbol, window, strategy, view))
                if target is None or not _moves(target, view.positions.get(symbol, Decimal(0))):
                    continue
                if cursor != t + 1:
                    await call(StrategyActivities.replay_advance, t + 1, QUICK)
                    cursor = t + 1
                key = f"{run_id_of(input)}|{symbol}|{t}"
                view = await self._trade(input, key, symbol, target, view)
        self._progress = ReplayProgress(total, total)
        report.bars = total

    # -- trading towards a target -------------------------------------------------------------

    @staticmethod
    def _state(
        symbol: str, bars: list[Bar], strategy: Strategy, view: PortfolioView
    ) -> StrategyState:
        return StrategyState(
            symbol=symbol,
            bars=bars[-strategy.history :],
            position=view.positions.get(symbol, Decimal(0)),
            cash=view.cash,
            equity=view.equity,
        )

    async def _trade(
        self,
        input: StrategyRunInput,
        key: str,
        symbol: str,
        target: Target,
        view: PortfolioView,
    ) -> PortfolioView:
        """Close what points the wrong way, then open the target's exposure with what the
        close left; returns the portfolio as it stands afterwards."""
        position = view.positions.get(symbol, Decimal(0))
        closing = closing_order(target, position)
        traded = False
        if closing is not None:
            order = await self._place(
                input, f"{key}|close", symbol, closing.side, closing.quantity, target.reason
            )
            traded = True
            if order is None or order.status is not OrderStatus.FILLED:
                return await call(StrategyActivities.portfolio, input.portfolio_id, STORE)
        if target.exposure is not Exposure.FLAT:
            plan = await call(
                StrategyActivities.plan_opening,
                OpeningRequest(
                    input.portfolio_id,
                    symbol,
                    target.exposure.value,
                    target.reason,
                    target.fraction,
                ),
                STORE,
            )
            if plan.side is not None:
                await self._place(
                    input, f"{key}|open", symbol, plan.side, plan.quantity, target.reason
                )
                traded = True
        if not traded:
            return view
        return await call(StrategyActivities.portfolio, input.portfolio_id, STORE)

    async def _place(
        self,
        input: StrategyRunInput,
        key: str,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        reason: str,
    ) -> OrderSnapshot | None:
        """Place one market order as an OrderWorkflow and wait for its end."""
        client_order_id = f"strategy-{uuid5(CLIENT_ORDER_IDS, key)}"
        order_id = order_id_for(input.portfolio_id, client_order_id)
        request = OrderRequest(
            order_id=order_id,
            portfolio_id=input.portfolio_id,
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            order_type=OrderType.MARKET,
            time_in_force=TimeInForce.GTC,
        )
        record = StrategyOrder(
            order_id=order_id,
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            status=OrderStatus.PENDING,
            filled_quantity=Decimal(0),
            reason=reason,
        )
        self._orders.append(record)
        try:
            order: OrderSnapshot = await workflow.execute_child_workflow(
                OrderWorkflow.run,
                OrderWorkflowInput(request=request, options=input.order_options),
                id=workflow_id_for(order_id),
                task_queue=input.order_task_queue or workflow.info().task_queue,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
        except ChildWorkflowError as err:
            workflow.logger.warning("strategy order %s failed: %s", order_id, err)
            record.status = OrderStatus.CANCELED
            return None
        record.status = order.status
        record.filled_quantity = order.filled_quantity
        record.average_fill_price = order.average_fill_price
        record.reject_code = order.reject_code
        return order


def run_id_of(input: StrategyRunInput) -> str:
    return input.run_id or workflow.info().workflow_id


def _moves(target: Target, position: Decimal) -> bool:
    """Whether trading towards `target` from `position` would place an order."""
    held = 1 if position > 0 else -1 if position < 0 else 0
    return target.exposure.sign != held


__all__ = ["StrategyRunWorkflow"]
