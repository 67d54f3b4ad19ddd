"""Payloads shared by the workflows, their activities, the API and the tests.

Plain dataclasses with Decimal amounts; every client and worker uses the pydantic data
converter, which carries Decimal as a string and datetime as ISO 8601 without loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID, uuid5

from domain.orders import OrderClass, OrderSide, OrderStatus, OrderType, TimeInForce
from domain.portfolio import TradingState

TASK_QUEUE = "trading-orders"

# Order ids are derived from (portfolio, client order id): the same request from the same
# portfolio always names the same order and the same workflow, so a retried or replayed
# POST can never create a second order.
ORDER_ID_NAMESPACE = UUID("6f1c1a4e-3b5d-4f7e-9a51-0c2b7d8e9f10")
REPORT_ID_NAMESPACE = UUID("3d0f8a52-6c1e-4b8e-a7f4-2e9c5b1d7a30")


def order_id_for(portfolio_id: UUID, client_order_id: str) -> UUID:
    return uuid5(ORDER_ID_NAMESPACE, f"{portfolio_id}:{client_order_id}")


def workflow_id_for(order_id: UUID) -> str:
    return f"order-{order_id}"


class BrokerEventType(StrEnum):
    """Trade updates, in the vocabulary every broker adapter translates to."""

    NEW = "new"
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"
    PENDING_CANCEL = "pending_cancel"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"

    @property
    def is_fill(self) -> bool:
        return self in (BrokerEventType.FILL, BrokerEventType.PARTIAL_FILL)

    @property
    def is_terminal(self) -> bool:
        return self in (BrokerEventType.CANCELED, BrokerEventType.EXPIRED, BrokerEventType.REJECTED)


@dataclass
class OrderRequest:
    """What a client asked for; the input of the order workflow."""

    order_id: UUID
    portfolio_id: UUID
    client_order_id: str
    symbol: str
    side: OrderSide
    quantity: Decimal
    order_type: OrderType = OrderType.MARKET
    time_in_force: TimeInForce = TimeInForce.DAY
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None  # a trailing_stop's distance in dollars
    trail_percent: Decimal | None = None  # or in percent of its mark
    order_class: OrderClass = OrderClass.SIMPLE  # twap/vwap: a parent (ParentOrderWorkflow)
    parent_order_id: UUID | None = None  # a child order's parent
    oco_group: str | None = None  # exit legs the venue fills at most one of (bracket, oco)


@dataclass
class OrderSnapshot:
    """The order as the store holds it; what queries, updates and the API return."""

    order_id: UUID
    portfolio_id: UUID
    client_order_id: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    status: OrderStatus
    filled_quantity: Decimal
    filled_notional: Decimal
    average_fill_price: Decimal | None
    commission: Decimal
    created_at: datetime
    updated_at: datetime
    version: int
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    broker_order_id: str | None = None
    reject_code: str | None = None
    reject_reason: str | None = None
    submitted_at: datetime | None = None
    filled_at: datetime | None = None
    closed_at: datetime | None = None
    expires_at: datetime | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    order_class: OrderClass = OrderClass.SIMPLE
    parent_order_id: UUID | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def remaining_quantity(self) -> Decimal:
        return self.quantity - self.filled_quantity


@dataclass
class BrokerEvent:
    """One trade update from a broker, delivered to `order-{client_order_id}` as a signal."""

    event: BrokerEventType
    client_order_id: str
    timestamp: datetime
    broker_order_id: str | None = None
    execution_id: str | None = None
    quantity: Decimal | None = None  # of this execution
    price: Decimal | None = None  # of this execution
    commission: Decimal = Decimal(0)
    cumulative_quantity: Decimal | None = None
    reason: str | None = None


@dataclass
class BrokerOrderState:
    """What the broker says about one order when asked (polling, reconciliation)."""

    client_order_id: str
    broker_order_id: str
    status: OrderStatus
    filled_quantity: Decimal
    executions: list[BrokerEvent] = field(default_factory=list)
    reason: str | None = None


@dataclass
class AcceptInput:
    """Risk check, reservation and persistence of one order, in one transaction.

    `rejection` carries a refusal decided before risk (an unknown symbol), so that the
    order is still persisted as rejected with its reason.
    """

    request: OrderRequest
    bid: Decimal | None = None
    ask: Decimal | None = None
    rejection_code: str | None = None
    rejection_reason: str | None = None


@dataclass
class SubmitResult:
    broker_order_id: str
    already_existed: bool  # found by client order id: an earlier attempt had landed


@dataclass
class ApplyFillInput:
    order_id: UUID
    fill: BrokerEvent


@dataclass
class RecordStatusInput:
    """A status change that is not a fill: submitted, pending_cancel, cancel refused, or a
    terminal status (which releases what is left of the reservation)."""

    order_id: UUID
    status: OrderStatus
    broker_order_id: str | None = None
    reason: str | None = None
    code: str | None = None


@dataclass
class Placement:
    """The answer to one placing request: the decided order, and whether this request is
    the one that placed it (exactly one of any number of concurrent duplicates is)."""

    order: OrderSnapshot
    created: bool


@dataclass
class BrokerReachability:
    """Whether an order's workflow can reach the broker: `unreachable_since` while it
    cannot (it waits and retries), None again once the broker answers."""

    order_id: UUID
    unreachable_since: datetime | None
    reason: str | None = None


@dataclass
class CancelRequest:
    reason: str = "canceled by client"


@dataclass
class OrderWorkflowOptions:
    """Tunables of one order workflow, fixed when it starts (set from worker settings)."""

    # Without broker events the order polls the broker after poll_interval_seconds, and
    # each poll that finds nothing new doubles the wait, up to max_poll_interval_seconds:
    # a GTC order resting for weeks must not spend the broker's request budget.
    poll_interval_seconds: int = 60
    max_poll_interval_seconds: int = 900
    max_history_events: int = 2000
    expiry_grace_seconds: int = 5
    # Run the short store steps as local activities (workflows/order.py, LOCAL_STEPS). A
    # worker without a workflow cache (max_cached_workflows=0, some tests) must not: it
    # evicts a run whose local activity is in flight and loses that workflow task until
    # the task times out.
    local_store_steps: bool = True


@dataclass
class ResumeState:
    """What a continued-as-new order workflow carries over from its previous run."""

    snapshot: OrderSnapshot
    applied_execution_ids: list[str]
    pending_events: list[BrokerEvent]
    cancel_requested: bool = False
    idle_polls: int = 0
    cancel_reason: str = "canceled by client"
    reconcile_requested: bool = False  # a re-read asked for and not yet done


@dataclass
class OrderWorkflowInput:
    request: OrderRequest
    options: OrderWorkflowOptions = field(default_factory=OrderWorkflowOptions)
    resume: ResumeState | None = None


# -- parent orders: execution algorithms (workflows/parent.py) -----------------------------


@dataclass
class ExecutionPlan:
    """How a parent order is worked: `slices` child orders over `duration_seconds`, the
    first at once and one every duration/slices after it; TWAP sizes them equally, VWAP by
    the volume profile of recent bars."""

    algorithm: OrderClass
    duration_seconds: int
    slices: int


@dataclass
class ParentWorkflowInput:
    request: OrderRequest  # the parent: order_class names the algorithm
    plan: ExecutionPlan
    options: OrderWorkflowOptions = field(default_factory=OrderWorkflowOptions)


@dataclass
class PlaceChildInput:
    """One slice of a parent: risk and the child's row, taking the slice's share of the
    parent's reservation, in one transaction."""

    parent_order_id: UUID
    child: OrderRequest
    bid: Decimal
    ask: Decimal


@dataclass
class ParentProgressInput:
    """Sum the children's fills onto the parent's row; with `final`, close the parent
    (filled when everything filled, else `final`) and release what it still reserves."""

    parent_order_id: UUID
    final: OrderStatus | None = None
    reason: str | None = None


@dataclass
class VolumeProfileInput:
    symbol: str
    slices: int


def child_client_order_id(parent_order_id: UUID, index: int) -> str:
    """A slice's client order id: derived from the parent, so a slice placed again after a
    crash names the same order (and workflow) and can never be sent twice."""
    return f"{parent_order_id}-s{index + 1}"


# -- brackets, OCO and OTO (workflows/bracket.py) ------------------------------------------


@dataclass
class LegPlan:
    """The exit legs of a bracket (both), an OCO (both) or an OTO (one of them)."""

    take_profit_limit: Decimal | None = None
    stop_loss_stop: Decimal | None = None
    stop_loss_limit: Decimal | None = None


@dataclass
class BracketWorkflowInput:
    request: OrderRequest  # the parent: order_class bracket, oco or oto
    legs: LegPlan
    options: OrderWorkflowOptions = field(default_factory=OrderWorkflowOptions)
    check_seconds: int = 1  # how often the parent reads its entry's and legs' progress
    resumed: bool = False  # a continue-as-new: the parent was decided by an earlier run


@dataclass
class PlaceLegsInput:
    """One group of exit legs (sized to what the entry filled since the last group): risk
    and their rows in one transaction."""

    parent_order_id: UUID
    legs: list[OrderRequest]
    bid: Decimal
    ask: Decimal


@dataclass
class BracketProgressInput:
    """Bring the parent's row up to date with its entry (bracket, oto) or its legs (oco);
    with `final`, close it (filled when every share filled, else `final`)."""

    parent_order_id: UUID
    final: OrderStatus | None = None
    reason: str | None = None


def entry_client_order_id(parent_order_id: UUID) -> str:
    return f"{parent_order_id}-entry"


def leg_client_order_id(parent_order_id: UUID, role: str, group: int) -> str:
    """An exit leg's client order id (`role` tp or sl; groups count from 1): derived from
    the parent, so a group placed again after a crash names the same orders."""
    return f"{parent_order_id}-{role}{group}"


def leg_role(parent_order_id: UUID, client_order_id: str) -> str | None:
    """`tp` or `sl` for an exit leg of this parent, None for its entry or another order."""
    prefix = f"{parent_order_id}-"
    if not client_order_id.startswith(prefix):
        return None
    role = client_order_id[len(prefix) : len(prefix) + 2]
    return role if role in ("tp", "sl") else None


def oco_group_for(parent_order_id: UUID, group: int) -> str:
    return f"{parent_order_id}-g{group}"


# -- protected positions (workflows/protection.py) -----------------------------------------


def protection_workflow_id(portfolio_id: UUID, symbol: str) -> str:
    return f"protection-{portfolio_id}-{symbol}"


@dataclass
class ProtectionInput:
    """One guard: watches a position's stop-loss and take-profit levels (kept on the
    position's row) every `check_seconds` and closes the position at market when one is
    hit; ends when the position is flat, trading is halted, or the levels are removed."""

    portfolio_id: UUID
    symbol: str
    check_seconds: int = 1
    closes: int = 0  # closing orders placed so far (carried across continue-as-new)
    options: OrderWorkflowOptions = field(default_factory=OrderWorkflowOptions)


@dataclass
class ProtectionCheck:
    """What a guard's check found: `verdict` is hold, stop_loss, take_profit (close
    `closable` at market on `side`), flat, unprotected (no levels) or halted."""

    verdict: str
    side: OrderSide | None = None
    closable: Decimal = Decimal(0)
    price: Decimal | None = None


# -- operations: snapshots, reconciliation, the kill switch ---------------------------------


@dataclass
class MarketDay:
    """What the exchange calendar says about one instant."""

    trading_day: bool  # the exchange holds a session on that New York date
    open: bool  # the session is open at that instant


class SnapshotKind(StrEnum):
    INTRADAY = "intraday"
    EOD = "eod"
    MANUAL = "manual"


@dataclass
class SnapshotInput:
    kind: SnapshotKind = SnapshotKind.INTRADAY
    taken_at: datetime | None = None  # None: when the schedule meant the run for


@dataclass
class PortfolioSnapshot:
    """A portfolio valued at one instant; amounts exact, percentages with 8 decimals."""

    portfolio_id: UUID
    taken_at: datetime
    kind: SnapshotKind
    cash: Decimal
    positions_value: Decimal
    equity: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    return_pct: Decimal  # equity against the initial capital, in percent
    drawdown: Decimal  # below the highest equity of earlier snapshots, in percent (>= 0)


@dataclass
class SnapshotResult:
    taken_at: datetime
    kind: SnapshotKind
    snapshots: list[PortfolioSnapshot] = field(default_factory=list)
    written: int = 0  # new rows; a re-run of the same instant writes none
    skipped: str | None = None  # why nothing was taken (market closed, holiday)


class DiscrepancyKind(StrEnum):
    # The store holds a different quantity than the broker (summed over portfolios).
    POSITION_MISMATCH = "position_mismatch"
    # Open in the store, closed (filled, canceled, ...) at the broker: events were lost.
    ORDER_CLOSED_AT_BROKER = "order_closed_at_broker"
    # Open at both, the broker has filled more than the store applied.
    ORDER_FILLS_BEHIND = "order_fills_behind"
    # The store has applied more than the broker reports filled: never legitimate.
    ORDER_FILLS_AHEAD = "order_fills_ahead"
    # Submitted according to the store, unknown at the broker.
    ORDER_MISSING_AT_BROKER = "order_missing_at_broker"
    # Working at the broker, not open in the store (closed there, or never ours).
    ORDER_OPEN_ONLY_AT_BROKER = "order_open_only_at_broker"

    @property
    def repairable(self) -> bool:
        """The order workflow fixes these itself once told to re-read the broker: it
        applies the missed executions and status, idempotently by execution id."""
        return self in (DiscrepancyKind.ORDER_CLOSED_AT_BROKER, DiscrepancyKind.ORDER_FILLS_BEHIND)


@dataclass
class Discrepancy:
    """One difference between the store and the broker; amounts as strings (JSON)."""

    kind: DiscrepancyKind
    symbol: str | None = None
    order_id: UUID | None = None
    portfolio_id: UUID | None = None
    expected: dict[str, str] = field(default_factory=dict)  # the store's view
    actual: dict[str, str] = field(default_factory=dict)  # the broker's view
    repaired: bool = False
    note: str | None = None

    @property
    def key(self) -> tuple[str, str | None, UUID | None]:
        return (self.kind.value, self.symbol, self.order_id)


class ReportStatus(StrEnum):
    RUNNING = "running"
    CLEAN = "clean"
    DISCREPANCIES = "discrepancies"
    FAILED = "failed"
    SKIPPED = "skipped"  # not a trading day: no report is written


@dataclass
class ReconciliationInput:
    run_at: datetime | None = None  # None: when the schedule meant the run for
    force: bool = False  # run on a day without a session too (an operator's manual run)
    # How long the order workflows get to apply what they missed before the check that
    # marks their discrepancies repaired.
    repair_wait_seconds: int = 60


@dataclass
class ReconciliationReport:
    report_id: UUID
    run_at: datetime
    status: ReportStatus
    broker: str = ""
    discrepancies: list[Discrepancy] = field(default_factory=list)
    finished_at: datetime | None = None


@dataclass
class FinishReconciliationInput:
    report_id: UUID
    status: ReportStatus
    discrepancies: list[Discrepancy] = field(default_factory=list)
    error: str | None = None


@dataclass
class TradingStateRequest:
    state: TradingState
    reason: str


@dataclass
class RecordTradingStateInput:
    portfolio_id: UUID
    state: TradingState
    reason: str


@dataclass
class TradingStateChange:
    """A portfolio's trading state after a request, and the open orders it is canceling."""

    portfolio_id: UUID
    previous: TradingState
    state: TradingState
    reason: str
    orders_to_cancel: list[UUID] = field(default_factory=list)


@dataclass
class TradingStateWorkflowInput:
    portfolio_id: UUID


def trading_state_workflow_id(portfolio_id: UUID) -> str:
    return f"trading-state-{portfolio_id}"


def report_id_for(run_at: datetime) -> UUID:
    """One report per due instant, whichever run (re-run, backfill) gets there."""
    return uuid5(REPORT_ID_NAMESPACE, run_at.astimezone(UTC).isoformat())
