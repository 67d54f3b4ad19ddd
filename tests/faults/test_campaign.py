"""The randomized broker-fault campaign: many seeded schedules of orders and faults on the
time-skipping server, real PostgreSQL, the real paper venue and its outbox relay, each
checked against the invariants after every step and once its faults are restored.

    FAULT_CAMPAIGN_RUNS=N    run N schedules (default 200, seeds FAULT_CAMPAIGN_FIRST..)
    FAULT_CAMPAIGN_FIRST=K   the first seed (default 0)
    FAULT_CAMPAIGN_SEED=S    run the one schedule S (what a failure prints to reproduce it)
    FAULT_CAMPAIGN_PROCESSES=P  deal the schedules over P processes (default: one per core)

`bench/fault_campaign.py` runs 10,000 schedules and reports the totals.
"""

from __future__ import annotations

import os
from decimal import Decimal
from uuid import uuid4

import pytest

from domain.orders import OrderSide, OrderStatus, OrderType
from domain.portfolio import Portfolio

from .campaign import (
    LIMITS,
    default_processes,
    quiet_activity_failures,
    reproduce_command,
    run_in_processes,
)
from .invariants import (
    BookOrder,
    Execution,
    LaneView,
    VenueOrder,
    halt_divergences,
    safety_divergences,
    settled_divergences,
)
from .schedule import FAULT_KINDS, make_schedule

pytestmark = pytest.mark.integration


def campaign_seeds() -> list[int]:
    one = os.environ.get("FAULT_CAMPAIGN_SEED")
    if one:
        return [int(one)]
    first = int(os.environ.get("FAULT_CAMPAIGN_FIRST", "0"))
    runs = int(os.environ.get("FAULT_CAMPAIGN_RUNS", "200"))
    return list(range(first, first + runs))


async def test_no_schedule_of_broker_faults_loses_or_invents_money(pg_server_url: str) -> None:
    seeds = campaign_seeds()
    processes = int(os.environ.get("FAULT_CAMPAIGN_PROCESSES", default_processes()))
    with quiet_activity_failures():
        report = await run_in_processes(pg_server_url, seeds, processes=processes)
    print(report.summary())
    assert sorted(report.results) == seeds, "every schedule ran to its end"
    assert not report.failed(), report.summary()
    if len(seeds) >= 200:
        # The campaign is only worth its 0 if the faults happened: every kind was
        # scheduled, and the fault points saw each kind take effect.
        scheduled = report.faults_by_kind()
        assert all(scheduled[kind] > 0 for kind in FAULT_KINDS), scheduled
        seen = {name.split(":")[0] for name in report.effects()}
        assert set(FAULT_KINDS) <= seen, sorted(seen)


# -- the checks themselves: a campaign whose invariants cannot fail proves nothing ---------


def _view(**books: tuple[BookOrder, VenueOrder | None]) -> LaneView:
    portfolio = Portfolio(initial_capital=Decimal("10000"), limits=LIMITS, name="check")
    labels = {}
    book_orders = {}
    venue_orders = {}
    for label, (book, venue) in books.items():
        order_id = uuid4()
        labels[order_id] = label
        book_orders[order_id] = book
        if venue is not None:
            venue_orders[order_id] = venue
    return LaneView(
        portfolio=portfolio,
        labels=labels,
        books=book_orders,
        venue=venue_orders,
        symbols=("QX",),
    )


def _limit_buy(status: OrderStatus, filled: str = "0", **executions: Execution) -> BookOrder:
    return BookOrder(
        symbol="QX",
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        status=status,
        filled_quantity=Decimal(filled),
        executions=dict(executions),
    )


def test_a_settled_schedule_with_books_equal_to_the_venue_passes() -> None:
    view = _view(
        resting=(
            _limit_buy(OrderStatus.SUBMITTED),
            VenueOrder(OrderStatus.SUBMITTED, Decimal(0)),
        )
    )
    assert settled_divergences(view) == []


def test_an_order_closed_in_the_books_while_working_at_the_venue_is_caught() -> None:
    view = _view(
        lost=(_limit_buy(OrderStatus.CANCELED), VenueOrder(OrderStatus.SUBMITTED, Decimal(0)))
    )
    assert any("closed in the books" in d for d in safety_divergences(view))


def test_a_fill_the_books_never_got_is_caught_once_settled() -> None:
    fill = Execution(Decimal(5), Decimal("10.00"), Decimal("1.00"))
    view = _view(
        missed=(
            _limit_buy(OrderStatus.SUBMITTED),
            VenueOrder(OrderStatus.PARTIALLY_FILLED, Decimal(5), {"x1": fill}),
        )
    )
    problems = settled_divergences(view)
    assert any("books lost" in d for d in problems), problems
    assert any("filled 0 in the books, 5 at the venue" in d for d in problems), problems


def test_a_fill_the_venue_never_made_is_caught_at_once() -> None:
    fill = Execution(Decimal(5), Decimal("10.00"), Decimal("1.00"))
    view = _view(
        invented=(
            _limit_buy(OrderStatus.PARTIALLY_FILLED, "5", x9=fill),
            VenueOrder(OrderStatus.SUBMITTED, Decimal(0)),
        )
    )
    assert any("never made" in d for d in safety_divergences(view))


def test_negative_cash_and_a_ledger_imbalance_are_caught() -> None:
    view = _view()
    view.portfolio.cash_balance = Decimal("-0.01")
    problems = safety_divergences(view)
    assert any("cash is negative" in d for d in problems), problems
    assert any("ledger imbalance" in d for d in problems), problems


def test_an_order_left_working_or_accepted_after_the_kill_switch_is_caught() -> None:
    view = _view(
        working=(_limit_buy(OrderStatus.SUBMITTED), VenueOrder(OrderStatus.SUBMITTED, Decimal(0))),
        late=(_limit_buy(OrderStatus.FILLED, "5"), VenueOrder(OrderStatus.FILLED, Decimal(5))),
    )
    working, late = list(view.labels)
    problems = halt_divergences(view, {working: 1, late: 4}, halted_at_step=2)
    assert any("working: still submitted after the halt" in p for p in problems), problems
    assert any("late: placed after the halt, yet filled" in p for p in problems), problems
    view.books[working].status = OrderStatus.CANCELED
    view.books[late].status = OrderStatus.REJECTED
    view.books[late].reject_code = "TRADING_HALTED"
    assert halt_divergences(view, {working: 1, late: 4}, halted_at_step=2) == []


def test_a_failing_seed_names_the_command_that_reproduces_it() -> None:
    assert reproduce_command(4711).startswith("FAULT_CAMPAIGN_SEED=4711 ")
    assert "tests/faults" in reproduce_command(4711)


def test_a_seed_always_means_the_same_schedule() -> None:
    assert make_schedule(17) == make_schedule(17)
    assert make_schedule(17) != make_schedule(18)
