"""How every `trading` command prints: money as "$1,234.56", quantities without trailing
zeros, aligned tables (numbers and money to the right), key/value cards, and JSON.

Stdlib only, so that `trading --help` stays fast; the client and operator commands share it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Usd:
    """An amount to print as US dollars: "$1,234.56", "-$0.50"; a price below one dollar
    keeps its fourth decimal ("$0.1234"). Right-aligned in tables."""

    value: Decimal | None

    def __str__(self) -> str:
        return usd(self.value)


@dataclass(frozen=True)
class Percent:
    """A percentage already scaled to 100: "12.50%", "0.00%"."""

    value: Decimal | None

    def __str__(self) -> str:
        if self.value is None:
            return "-"
        return f"{self.value:,.2f}%"


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(2, -exponent) if isinstance(exponent, int) else 2


def usd(value: Decimal | None) -> str:
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.{_places(value)}f}"


def _plain(value: Decimal) -> str:
    """A quantity as typed: 10, 0.5, 1,000 (no exponent, no trailing zeros)."""
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        normal = normal.quantize(Decimal(1))
    return f"{normal:,f}"


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, Usd | Percent):
        return str(value)
    if isinstance(value, Decimal):
        return _plain(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(getattr(value, "value", value))


def _numeric(value: object) -> bool:
    return isinstance(value, Decimal | int | Usd | Percent) and not isinstance(value, bool)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Aligned columns: numbers and money to the right, text to the left."""
    cells = [[cell(value) for value in row] for row in rows]
    right = [
        bool(rows) and all(_numeric(row[i]) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if align else value.ljust(width)
            for value, width, align in zip(values, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in cells)])


def card(pairs: Sequence[tuple[str, object]]) -> str:
    """One record, a name and its value per line."""
    width = max(len(name) for name, _ in pairs)
    return "\n".join(f"{name.ljust(width)}  {cell(value)}" for name, value in pairs)


def as_json(result: Any) -> str:
    """Pydantic models (and lists of them) as the API sends them; other values as JSON with
    decimals as strings."""
    return json.dumps(_jsonable(result), indent=2, default=_default)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Usd | Percent):
        return None if value.value is None else f"{value.value:f}"
    return str(getattr(value, "value", value))
