"""Finding a strategy by name: a built-in one (`sma_crossover`, `breakout`) or a user's
class named by an importable dotted path, `package.module:ClassName` (or
`package.module.ClassName`). A user class is imported here, checked against the protocol
(domain.strategies.base), and registered so the strategy workflow finds it by that name.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from domain.errors import ValidationError
from domain.strategies import registry
from domain.strategies.base import Strategy, StrategyFactory


class StrategyError(ValueError):
    """An unknown strategy or parameter: the message is one line for the user."""


def _import(path: str) -> object:
    module_name, sep, attribute = path.partition(":")
    if not sep:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise StrategyError(
            f"unknown strategy {path!r}: use one of {', '.join(sorted(registry.BUILTIN))} "
            "or an importable module.path:ClassName"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise StrategyError(
            f"unknown strategy {path!r}: cannot import {module_name}: {err}"
        ) from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise StrategyError(
            f"unknown strategy {path!r}: {module_name} has no {attribute}"
        ) from None


def load_strategy(name: str, params: Mapping[str, str]) -> Strategy:
    """The strategy `name` built with `params` (strings from `--param k=v`); the class is
    registered for the workflow. StrategyError (one line) for anything wrong."""
    if name not in registry.BUILTIN:
        candidate = _import(name)
        if not callable(getattr(candidate, "from_params", None)):
            raise StrategyError(
                f"strategy {name!r} has no from_params(params) classmethod (see README)"
            )
        factory: StrategyFactory = candidate  # type: ignore[assignment]
        registry.register(name, factory)
    try:
        strategy = registry.build(name, params)
    except ValidationError as err:
        raise StrategyError(str(err)) from None
    except (TypeError, ValueError) as err:
        raise StrategyError(f"strategy {name!r}: {err}") from None
    if not isinstance(strategy, Strategy):
        raise StrategyError(f"strategy {name!r} lacks name, history or decide (see README)")
    return strategy


def parse_param(text: str) -> tuple[str, str]:
    """`k=v` from the command line."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise StrategyError(f"--param wants key=value, got {text!r}")
    return key.strip(), value.strip()
