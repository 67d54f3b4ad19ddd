"""The built-in strategies: `sma_crossover` and `breakout`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from domain.errors import ValidationError
from domain.strategies.base import (
    Exposure,
    StrategyState,
    Target,
    boolean,
    mean,
    parse_params,
    positive_int,
)


@dataclass(frozen=True)
class SmaCrossover:
    """Moving-average crossover on closes.

    When the `fast`-bar simple moving average crosses above the `slow` one (it was below on
    the previous bar, strictly, and is above now, strictly), close any short and go long
    with all available equity; on the opposite cross close the long and go short with all
    equity, or go flat when `allow_short` is false. Between crosses: hold.
    """

    fast: int = 10
    slow: int = 30
    allow_short: bool = True
    name: ClassVar[str] = "sma_crossover"

    def __post_init__(self) -> None:
        if self.fast >= self.slow:
            raise ValidationError("fast", f"fast ({self.fast}) must be below slow ({self.slow})")

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> SmaCrossover:
        values = parse_params(
            "sma_crossover",
            params,
            {
                "fast": (positive_int, 10),
                "slow": (positive_int, 30),
                "allow_short": (boolean, True),
            },
        )
        return cls(
            fast=int(values["fast"]),
            slow=int(values["slow"]),
            allow_short=bool(values["allow_short"]),
        )

    @property
    def history(self) -> int:
        return self.slow + 1  # the slow average now and one bar earlier

    def decide(self, state: StrategyState) -> Target | None:
        bars = state.bars
        if len(bars) < self.history:
            return None
        closes = [bar.close for bar in bars[-self.history :]]
        fast_now, slow_now = mean(closes[-self.fast :]), mean(closes[-self.slow :])
        fast_before = mean(closes[-self.fast - 1 : -1])
        slow_before = mean(closes[-self.slow - 1 : -1])
        if fast_before < slow_before and fast_now > slow_now:
            return Target(
                Exposure.LONG, f"sma_crossover: SMA{self.fast} crossed above SMA{self.slow}"
            )
        if fast_before > slow_before and fast_now < slow_now:
            exposure = Exposure.SHORT if self.allow_short else Exposure.FLAT
            return Target(exposure, f"sma_crossover: SMA{self.fast} crossed below SMA{self.slow}")
        return None


@dataclass(frozen=True)
class Breakout:
    """Donchian channel breakout.

    A close above the highest high of the `lookback` bars before it goes long with all
    available equity; a close below their lowest low closes the long, and goes short with
    all equity when `allow_short` is true (default false: flat). Otherwise: hold.
    """

    lookback: int = 20
    allow_short: bool = False
    name: ClassVar[str] = "breakout"

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Breakout:
        values = parse_params(
            "breakout",
            params,
            {"lookback": (positive_int, 20), "allow_short": (boolean, False)},
        )
        return cls(lookback=int(values["lookback"]), allow_short=bool(values["allow_short"]))

    @property
    def history(self) -> int:
        return self.lookback + 1  # the channel and the bar that breaks it

    def decide(self, state: StrategyState) -> Target | None:
        bars = state.bars
        if len(bars) < self.history:
            return None
        channel = bars[-self.history : -1]
        last = bars[-1]
        high = max(bar.high for bar in channel)
        low = min(bar.low for bar in channel)
        if last.close > high and state.position <= 0:
            return Target(Exposure.LONG, f"breakout: close above the {self.lookback}-bar high")
        if last.close < low and state.position >= 0:
            exposure = Exposure.SHORT if self.allow_short else Exposure.FLAT
            if exposure is Exposure.FLAT and state.position == 0:
                return None
            return Target(exposure, f"breakout: close below the {self.lookback}-bar low")
        return None
