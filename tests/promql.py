"""Metric names in PromQL expressions and the names a registry exports: what the alert rules
and the Grafana dashboard read must be what the processes expose."""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client.core import Metric

KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_WORD = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, keywords or label names)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for match in _WORD.finditer(text):
        word = match.group(0)
        if word in KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword or a function call
        names.add(word)
    return names


def sample_names(families: Iterable[Metric]) -> set[str]:
    """Every sample name the families expose (a counter as `_total`, a histogram as
    `_bucket`/`_sum`/`_count`; families that carry samples name them as they are)."""
    names: set[str] = set()
    for family in families:
        if family.samples:
            names.update(sample.name for sample in family.samples)
        else:
            names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names
