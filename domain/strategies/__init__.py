"""Pure trading strategies: bars and position in, a target exposure out (see base.py)."""

from domain.strategies.base import Exposure, Strategy, StrategyState, Target
from domain.strategies.builtin import Breakout, SmaCrossover
from domain.strategies.registry import BUILTIN, build
from domain.strategies.sizing import PlannedOrder, closing_order, opening_order

__all__ = [
    "BUILTIN",
    "Breakout",
    "Exposure",
    "PlannedOrder",
    "SmaCrossover",
    "Strategy",
    "StrategyState",
    "Target",
    "build",
    "closing_order",
    "opening_order",
]
