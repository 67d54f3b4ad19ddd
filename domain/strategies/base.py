"""What a strategy is: pure, deterministic code from bars and the current position to a
target exposure. No I/O, no clock, no randomness: the same inputs always give the same
answer, so the strategy runs inside a Temporal workflow and replays exactly.

A strategy answers, after each closed bar of a symbol, with a `Target` (be long, short or
flat with a fraction of the available equity) or `None` (keep what you hold). Turning a
target into orders is the job of `domain.strategies.sizing`, with the price at which the
orders will trade; placing them is the job of the strategy workflow.

User strategies follow the same protocol (see README, "Strategies and backtests"):

    class MyStrategy:
        name = "my_strategy"

        @classmethod
        def from_params(cls, params: Mapping[str, str]) -> MyStrategy: ...

        @property
        def history(self) -> int: ...  # bars `decide` needs to see (the warm-up)

        def decide(self, state: StrategyState) -> Target | None: ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar, Protocol, TypeVar, runtime_checkable

from domain.errors import ValidationError
from domain.market import Bar

ONE = Decimal(1)


class Exposure(StrEnum):
    LONG = "long"
    SHORT = "short"
    FLAT = "flat"

    @property
    def sign(self) -> int:
        return {"long": 1, "short": -1, "flat": 0}[self.value]


@dataclass(frozen=True)
class Target:
    """Where a strategy wants to be in one symbol: long, short or flat, with `fraction`
    of the available equity (sizing buys whole shares), and why (the orders' `reason`)."""

    exposure: Exposure
    reason: str
    fraction: Decimal = ONE

    def __post_init__(self) -> None:
        if not isinstance(self.fraction, Decimal) or not 0 < self.fraction <= 1:
            raise ValidationError("fraction", f"fraction must be in (0, 1], got {self.fraction}")
        if not self.reason:
            raise ValidationError("reason", "a target needs a reason")


@dataclass(frozen=True)
class StrategyState:
    """What a strategy sees after a bar closed: the last `history` bars of one symbol
    (oldest first, the just-closed bar last), the signed position held, and the money."""

    symbol: str
    bars: Sequence[Bar]
    position: Decimal  # signed shares: > 0 long, < 0 short
    cash: Decimal
    equity: Decimal


@runtime_checkable
class Strategy(Protocol):
    """Bars and position in, target out; deterministic."""

    name: ClassVar[str]

    @property
    def history(self) -> int:
        """How many bars `decide` needs; fewer bars than this never produce a target."""
        ...

    def decide(self, state: StrategyState) -> Target | None: ...


class StrategyFactory(Protocol):
    """A strategy class: builds an instance from `--param k=v` strings, refusing unknown
    names and bad values with `ValidationError`."""

    def from_params(self, params: Mapping[str, str]) -> Strategy: ...


T = TypeVar("T")


def parse_params(
    strategy: str,
    params: Mapping[str, str],
    spec: Mapping[str, tuple[Callable[[str], T], T]],
) -> dict[str, T]:
    """Read `params` (strings) against `spec` {name: (parser, default)}; an unknown name
    or a value the parser refuses raises ValidationError naming it."""
    unknown = sorted(set(params) - set(spec))
    if unknown:
        known = ", ".join(sorted(spec)) or "none"
        raise ValidationError(
            unknown[0], f"{strategy} has no parameter {unknown[0]!r} (parameters: {known})"
        )
    values: dict[str, T] = {}
    for key, (parser, default) in spec.items():
        if key not in params:
            values[key] = default
            continue
        try:
            values[key] = parser(params[key])
        except (ValueError, ArithmeticError) as err:
            raise ValidationError(key, f"{strategy}: bad value for {key}: {err}") from None
    return values


def positive_int(text: str) -> int:
    value = int(text.strip())
    if value <= 0:
        raise ValueError(f"must be a positive integer, got {text!r}")
    return value


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {text!r}")


def mean(values: Sequence[Decimal]) -> Decimal:
    return sum(values, Decimal(0)) / len(values)
