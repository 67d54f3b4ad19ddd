"""Fault schedules: a pure function of an integer seed.

A schedule is one small trading session of its own portfolio on its own symbols: a scripted
price path (quotes with small displayed sizes, so larger orders fill in parts across quote
updates), a few orders (market, limit, stop; buys, sells of what an earlier order bought,
short sells; some canceled by the `cancel` update or the `cancel_request` signal), and
faults interleaved with them. Time is counted in steps of STEP (67 s) of skipped workflow
time from the schedule's start; a fault of N steps lasts N x 67 s. The step is deliberately
not a multiple of the workflow's timers (30 s, 60 s, ...), so a fault window begins and
ends at every phase of an order's poll and backoff timers rather than always just after
one. Everything here comes from `random.Random(seed)` and nothing else, so a seed always
means the same orders, prices and faults; only the interleaving with
real concurrency may differ from run to run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_DOWN, Decimal

STEP = timedelta(seconds=67)  # workflow time per step
TICK = Decimal("0.01")
BAND = Decimal("0.009")  # how far a price path may wander from its start

# What each kind of fault does (the campaign's report lists them in this order).
FAULT_KINDS: dict[str, str] = {
    "broker_down": "the broker link is cut for N steps for some of submit, poll, cancel",
    "answer_lost": "a submit lands at the venue, then its answer is lost (and the link may "
    "stay down for N steps)",
    "cancel_refused": "a cancel meets a fill first, is refused once (the order keeps "
    "working), or fails once before or after it reached the venue",
    "events_late": "trade updates of the schedule arrive N steps late",
    "events_duplicated": "trade updates arrive twice, the copy now or steps later",
    "events_reordered": "two trade updates of one order arrive swapped",
    "stream_drop": "every delivery fails for N steps: the outbox keeps the rows and retries "
    "(the stream is shared: every schedule running beside it loses its events too)",
    "db_down": "the order activities' database is unreachable for this schedule for N steps",
    "worker_restart": "the schedule's worker is stopped (its running activities canceled) "
    "and a new one started on the same task queue",
    "reject_after_cancel": "the broker answers a cancel with `rejected`: the order is dead at "
    "the venue, whatever it filled stands",
}
SHARED_FAULTS = frozenset({"stream_drop"})
_WEIGHTS = {
    "broker_down": 3.0,
    "answer_lost": 2.0,
    "cancel_refused": 2.0,
    "events_late": 1.5,
    "events_duplicated": 1.5,
    "events_reordered": 1.5,
    "stream_drop": 0.7,
    "db_down": 1.5,
    "worker_restart": 0.6,
}
CANCEL_REFUSALS = ("fill_first", "refuse_once", "raise_before", "raise_after")
BROKER_OPS = ("submit", "get_order", "cancel")


@dataclass(frozen=True)
class QuoteTick:
    step: int
    symbol: str
    bid: Decimal
    ask: Decimal
    bid_size: int
    ask_size: int


@dataclass(frozen=True)
class OrderPlan:
    index: int
    symbol: str
    intent: str  # buy | sell (of an earlier buy) | short (a sell with nothing bought)
    order_type: str  # market | limit | stop
    quantity: int
    tif: str
    place_at: int
    limit: Decimal | None = None
    stop: Decimal | None = None
    cancel_at: int | None = None
    cancel_via: tuple[str, ...] = ()  # "update", "signal" (both: two cancels at once)

    @property
    def side(self) -> str:
        return "buy" if self.intent == "buy" else "sell"

    def describe(self) -> str:
        price = f"@{self.limit}" if self.limit else f"@{self.stop}" if self.stop else ""
        cancel = (
            f", cancel at {self.cancel_at} by {'+'.join(self.cancel_via)}"
            if self.cancel_at is not None
            else ""
        )
        return (
            f"#{self.index} {self.intent} {self.quantity} {self.symbol} {self.order_type}"
            f"{price} {self.tif} at {self.place_at}{cancel}"
        )


@dataclass(frozen=True)
class Fault:
    kind: str
    start: int
    length: int = 0  # steps; 0 for a one-off
    ops: tuple[str, ...] = ()  # broker_down: which broker calls fail
    order: int | None = None  # answer_lost, cancel_refused: which order
    variant: str | None = None  # cancel_refused: how
    delay: int = 0  # events_late, events_duplicated: steps

    @property
    def end(self) -> int:
        return self.start + self.length

    def active(self, step: int) -> bool:
        return self.start <= step < self.end

    def describe(self) -> str:
        parts = [f"{self.kind} at {self.start}"]
        if self.length:
            parts.append(f"for {self.length} steps")
        if self.ops:
            parts.append("on " + "+".join(self.ops))
        if self.order is not None:
            parts.append(f"order #{self.order}")
        if self.variant:
            parts.append(self.variant)
        if self.delay:
            parts.append(f"delay {self.delay} steps")
        return " ".join(parts)


@dataclass(frozen=True)
class Schedule:
    seed: int
    cash: Decimal
    symbols: tuple[str, ...]
    quotes: tuple[QuoteTick, ...]
    orders: tuple[OrderPlan, ...]
    faults: tuple[Fault, ...]
    active_steps: int  # the last step with an action or a fault; the drain follows
    max_history_events: int = 2000
    closing: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # last bid, ask
    halt_at: int | None = None  # the kill switch: the portfolio is halted at this step

    def describe(self) -> str:
        lines = [
            f"seed {self.seed}: cash {self.cash}, symbols {', '.join(self.symbols)}, "
            f"{len(self.quotes)} quotes, max_history_events {self.max_history_events}",
            *("  order " + o.describe() for o in self.orders),
            *("  fault " + f.describe() for f in self.faults),
            *([f"  kill switch at {self.halt_at}"] if self.halt_at is not None else []),
        ]
        return "\n".join(lines)

    def faults_of(self, kind: str) -> list[Fault]:
        return [f for f in self.faults if f.kind == kind]


def symbols_for(seed: int, count: int) -> tuple[str, ...]:
    """Symbols no other seed uses: 'Q', the seed in base 36, a letter."""
    if seed < 0:
        raise ValueError(f"seeds are non-negative, got {seed}")
    digits = ""
    n = seed
    while True:
        n, r = divmod(n, 36)
        digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[r] + digits
        if n == 0:
            break
    if len(digits) > 8:
        raise ValueError(f"seed {seed} is too large for a symbol")
    return tuple(f"Q{digits}{chr(ord('A') + i)}" for i in range(count))


def _price(value: Decimal) -> Decimal:
    return max(TICK, value.quantize(TICK, rounding=ROUND_DOWN))


def make_schedule(seed: int) -> Schedule:
    rng = random.Random(seed)
    symbols = symbols_for(seed, rng.choice((1, 1, 2)))
    active = rng.randint(8, 14)
    cash = Decimal(rng.choice((4000, 10000, 25000, 60000)))
    max_history_events = rng.choice((2000, 2000, 2000, 120))

    # The price path: a quote at step 0 for every symbol, then new quotes at random steps
    # (each a fresh unit of displayed size), a random walk of about one percent.
    mids = {s: Decimal(rng.randint(2000, 30000)) / 100 for s in symbols}
    spread = {s: TICK * rng.choice((1, 2, 3)) for s in symbols}
    quotes: list[QuoteTick] = []
    path: dict[str, dict[int, tuple[Decimal, Decimal]]] = {s: {} for s in symbols}

    def quote(step: int, symbol: str) -> None:
        bid = _price(mids[symbol] - spread[symbol] / 2)
        ask = bid + spread[symbol]
        quotes.append(QuoteTick(step, symbol, bid, ask, rng.randint(2, 12), rng.randint(2, 12)))
        path[symbol][step] = (bid, ask)

    for symbol in symbols:
        quote(0, symbol)
    # The walk stays within BAND of where it started: a market order reserves its price
    # plus the 2 % market-order buffer, and a gap beyond that is not what this campaign
    # is about (it would make cash negative without any fault, by design of the buffer).
    base = dict(mids)
    for step in range(1, active + 1):
        for symbol in symbols:
            if rng.random() < 0.6:
                drift = Decimal(str(round(rng.gauss(0, 0.004), 4)))
                low, high = base[symbol] * (1 - BAND), base[symbol] * (1 + BAND)
                mids[symbol] = min(high, max(low, mids[symbol] * (1 + drift)))
                quote(step, symbol)

    def touch(symbol: str, step: int) -> tuple[Decimal, Decimal]:
        return path[symbol][max(s for s in path[symbol] if s <= step)]

    orders: list[OrderPlan] = []
    bought: dict[str, int] = {}
    places = sorted(rng.randint(0, active - 2) for _ in range(rng.randint(2, 5)))
    for index, place_at in enumerate(places):
        symbol = rng.choice(symbols)
        roll = rng.random()
        if roll < 0.5:
            intent = "buy"
        elif roll < 0.75 and bought.get(symbol):
            intent = "sell"
        else:
            intent = "short"
        quantity = rng.randint(3, 25)
        if intent == "sell":
            quantity = rng.randint(1, bought[symbol])
        if intent == "buy":
            bought[symbol] = bought.get(symbol, 0) + quantity
        order_type = rng.choices(("market", "limit", "stop"), (0.4, 0.35, 0.25))[0]
        bid, ask = touch(symbol, place_at)
        limit = stop = None
        buying = intent == "buy"
        if order_type == "limit":
            away = Decimal(str(round(rng.uniform(-0.003, 0.009), 4)))  # < 0: marketable
            limit = _price(ask * (1 - away)) if buying else _price(bid * (1 + away)) + TICK
        elif order_type == "stop":
            away = Decimal(str(round(rng.uniform(0.001, 0.008), 4)))
            stop = _price(ask * (1 + away)) + TICK if buying else _price(bid * (1 - away))
        cancel_at = None
        cancel_via: tuple[str, ...] = ()
        if rng.random() < 0.4:
            cancel_at = place_at + rng.randint(0, 4)
            cancel_via = rng.choices(
                (("update",), ("signal",), ("signal", "update")), (0.45, 0.45, 0.1)
            )[0]
        orders.append(
            OrderPlan(
                index=index,
                symbol=symbol,
                intent=intent,
                order_type=order_type,
                quantity=quantity,
                tif="gtc",  # DAY would expire by the wall clock: not a function of the seed
                place_at=place_at,
                limit=limit,
                stop=stop,
                cancel_at=cancel_at,
                cancel_via=cancel_via,
            )
        )

    faults: list[Fault] = []
    canceled = [o.index for o in orders if o.cancel_at is not None]
    for _ in range(rng.choices((1, 2, 3, 4), (0.3, 0.35, 0.2, 0.15))[0]):
        kinds = [k for k in _WEIGHTS if k != "cancel_refused" or canceled]
        kind = rng.choices(kinds, [_WEIGHTS[k] for k in kinds])[0]
        # Most faults start near an order's placement (or its cancel), where they bite.
        anchor = rng.choice(orders)
        near = anchor.cancel_at if anchor.cancel_at is not None and rng.random() < 0.5 else None
        start = (
            min(active - 1, (near or anchor.place_at) + rng.randint(0, 2))
            if rng.random() < 0.7
            else rng.randint(0, active - 1)
        )
        if kind == "broker_down":
            ops = (
                BROKER_OPS
                if rng.random() < 0.4
                else tuple(op for op in BROKER_OPS if rng.random() < 0.5) or ("get_order",)
            )
            length = rng.choice((1, 2, 3, 4, 6, 8, 12, 15))
            faults.append(Fault(kind, start, length, ops=ops))
        elif kind == "answer_lost":
            order = rng.choice(orders)
            faults.append(
                Fault(kind, order.place_at, rng.choice((0, 0, 1, 2, 4, 6)), order=order.index)
            )
        elif kind == "cancel_refused":
            index = rng.choice(canceled)
            faults.append(
                Fault(
                    kind,
                    orders[index].place_at,
                    order=index,
                    variant=rng.choice(CANCEL_REFUSALS),
                )
            )
        elif kind in ("events_late", "events_duplicated"):
            faults.append(
                Fault(
                    kind,
                    start,
                    rng.randint(1, 6),
                    delay=rng.randint(1, 4) if kind == "events_late" else rng.randint(0, 2),
                )
            )
        elif kind == "events_reordered":
            faults.append(Fault(kind, start, rng.randint(1, 6)))
        elif kind == "stream_drop":
            faults.append(Fault(kind, start, rng.randint(1, 4)))
        elif kind == "db_down":
            faults.append(Fault(kind, start, rng.randint(1, 6)))
        else:
            faults.append(Fault(kind, start))
    # Drawn after the rest, so the draws above stay what they were for every seed.
    refused = {f.order for f in faults if f.kind == "cancel_refused"}
    rejectable = [index for index in canceled if index not in refused]
    if rejectable and rng.random() < 0.2:
        index = rng.choice(rejectable)
        faults.append(Fault("reject_after_cancel", orders[index].place_at, order=index))
    # The kill switch: HALTED cancels every open order and refuses new ones. Not in a
    # schedule with worker restarts (its lane sends no updates; see campaign.Lane.cancel).
    halt_at = None
    if not any(f.kind == "worker_restart" for f in faults) and rng.random() < 0.15:
        halt_at = rng.randint(1, active - 1)
    end = max([active, *(f.end for f in faults)])
    return Schedule(
        seed=seed,
        cash=cash,
        symbols=symbols,
        quotes=tuple(quotes),
        orders=tuple(orders),
        faults=tuple(faults),
        active_steps=end,
        max_history_events=max_history_events,
        closing={s: path[s][max(path[s])] for s in symbols},
        halt_at=halt_at,
    )
