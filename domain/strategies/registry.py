"""Strategies by name: the built-in ones, and user strategies that a composition root
(bootstrap.strategies) imported and registered under their dotted path."""

from __future__ import annotations

from collections.abc import Mapping

from domain.errors import ValidationError
from domain.strategies.base import Strategy, StrategyFactory
from domain.strategies.builtin import Breakout, SmaCrossover

BUILTIN: dict[str, StrategyFactory] = {"sma_crossover": SmaCrossover, "breakout": Breakout}
_registered: dict[str, StrategyFactory] = {}


def register(name: str, factory: StrategyFactory) -> None:
    _registered[name] = factory


def factory(name: str) -> StrategyFactory:
    found = BUILTIN.get(name) or _registered.get(name)
    if found is None:
        known = ", ".join(sorted(BUILTIN))
        raise ValidationError(
            "strategy",
            f"unknown strategy {name!r}: use one of {known} or an importable module.path:ClassName",
        )
    return found


def build(name: str, params: Mapping[str, str]) -> Strategy:
    """The strategy `name` with `params`; ValidationError for an unknown name or param."""
    return factory(name).from_params(params)
