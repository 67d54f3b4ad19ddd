"""What the strategy workflow and its activities exchange (see workflows/strategy.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from contracts.payloads import OrderWorkflowOptions
from domain.market import Timeframe
from domain.orders import OrderSide, OrderStatus


class RunStatus(StrEnum):
    COMPLETED = "completed"
    HALTED = "halted"  # the kill switch: no order placed
    SKIPPED = "skipped"  # outside the market session
    NO_DATA = "no_data"  # no bars to decide on


@dataclass
class StrategyRunInput:
    """One run of a strategy over `symbols` for `portfolio_id`.

    Live (`replay` false): decide once on the latest `bars` bars of each symbol.
    Replay (a backtest): walk every bar the replay venue holds, deciding after each close
    and trading at the next bar's open, through the same activities and OrderWorkflows.
    """

    strategy: str
    symbols: list[str]
    portfolio_id: UUID
    params: dict[str, str] = field(default_factory=dict)
    timeframe: Timeframe = Timeframe.DAY_1
    bars: int = 200
    replay: bool = False
    order_options: OrderWorkflowOptions = field(default_factory=OrderWorkflowOptions)
    run_id: str | None = None  # None: the workflow id
    order_task_queue: str | None = None  # None: the run's own task queue


@dataclass
class BarsRequest:
    symbol: str
    timeframe: Timeframe
    limit: int


@dataclass
class PortfolioView:
    """The portfolio as a strategy sees it, positions marked at the current quotes."""

    cash: Decimal
    equity: Decimal
    buying_power: Decimal
    trading_state: str
    positions: dict[str, Decimal] = field(default_factory=dict)  # signed shares


@dataclass
class OpeningRequest:
    """Size the opening order of a target at the current quote (sizing.opening_order)."""

    portfolio_id: UUID
    symbol: str
    exposure: str  # domain.strategies.Exposure value
    reason: str
    fraction: Decimal = Decimal(1)


@dataclass
class OpeningPlan:
    side: OrderSide | None = None  # None: nothing to open (already there, no money)
    quantity: Decimal = Decimal(0)
    price: Decimal | None = None


@dataclass
class StrategyOrder:
    """One order a run placed, as it ended (or stood when the run finished)."""

    order_id: UUID
    client_order_id: str
    symbol: str
    side: OrderSide
    quantity: Decimal
    status: OrderStatus
    filled_quantity: Decimal
    reason: str
    average_fill_price: Decimal | None = None
    reject_code: str | None = None


@dataclass
class StrategyRunReport:
    run_id: str
    strategy: str
    params: dict[str, str]
    symbols: list[str]
    portfolio_id: UUID
    status: RunStatus
    started_at: datetime
    finished_at: datetime
    note: str | None = None
    bars: int = 0  # bars decided on (replay: every bar walked)
    orders: list[StrategyOrder] = field(default_factory=list)


@dataclass
class ReplayProgress:
    done: int
    total: int


@dataclass
class ReplayBarsRequest:
    symbol: str
    offset: int
    limit: int


@dataclass
class StrategyRef:
    name: str
    params: dict[str, str] = field(default_factory=dict)
