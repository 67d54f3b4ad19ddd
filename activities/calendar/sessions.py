"""Trading session rules: when the market is open and when a DAY order expires.

Two modes:

* ``"calendar"``: the real exchange calendar from `exchange_calendars` (XNYS by default:
  holidays, early closes such as 13:00 New York time on the day after Thanksgiving).
  A session is the half-open interval ``[open, close)``: open at the opening instant,
  closed at the closing one.
* ``"always_open"``: every instant is open, and a session is a New York calendar day,
  ``[midnight, next midnight)`` America/New_York. So **DAY orders placed in always-open
  mode expire at the next midnight New York time** (23:00 or 24:00 hours later in UTC
  depending on daylight saving), never at 16:00: a new user trading at any hour sees
  fills, and DAY orders still expire daily.

Every method takes and returns timezone-aware datetimes (any aware input is accepted and
converted; results are always UTC); a naive datetime is refused with a ValueError, because
guessing its zone would put an expiry hours off.

The calendar is expensive to load (importing exchange_calendars pulls in pandas, about
0.5 s, and building four years of XNYS sessions about 0.15 s), so it is loaded lazily on
first use, for a bounded window (today - 2 years .. today + 2 years), turned into plain
sorted lists of UTC datetimes, and cached per calendar name for the whole process. A
question about an instant outside the window widens the cached window rather than failing.
Lookups are then two bisects on those lists: exact to the microsecond (exchange_calendars
itself works in whole minutes) and with no pandas on the hot path.

Lunch breaks (XHKG, XTKS) are not modelled: a calendar with breaks is refused rather than
answered wrongly. Loading pandas makes this module unfit for workflow code: call it from
activities, and hand workflows the instants it computes.
"""

from __future__ import annotations

import threading
import warnings
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
Mode = Literal["calendar", "always_open"]

# How far around a queried instant the cached sessions must reach: next_close and
# previous_close look for a session after or before it, and no exchange in these calendars
# has been shut for a month since 1914.
_MARGIN = timedelta(days=31)
_WINDOW = timedelta(days=731)


@dataclass(frozen=True)
class _SessionTable:
    """The sessions of one calendar between two dates, as sorted UTC instants."""

    first: date
    last: date
    opens: tuple[datetime, ...]
    closes: tuple[datetime, ...]
    days: frozenset[date]

    def covers(self, day: date) -> bool:
        return self.first <= day - _MARGIN and day + _MARGIN <= self.last


_tables: dict[str, _SessionTable] = {}
_tables_lock = threading.Lock()


def _load(calendar_name: str, first: date, last: date) -> _SessionTable:
    # Imported here so that always-open mode, and every process that never asks, does not
    # pay for pandas.
    import exchange_calendars

    with warnings.catch_warnings():
        # exchange_calendars 4.13 reads Series.values, which pandas 3.1 deprecates: noise in
        # every log until it is fixed upstream (it still works; pandas 4 may break it).
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        calendar = exchange_calendars.get_calendar(
            calendar_name, start=first.isoformat(), end=last.isoformat()
        )
    schedule = calendar.schedule
    if schedule["break_start"].notna().any():
        raise ValueError(f"calendar {calendar_name} has lunch breaks, which are not modelled")
    opens = tuple(ts.to_pydatetime().astimezone(UTC) for ts in schedule["open"])
    closes = tuple(ts.to_pydatetime().astimezone(UTC) for ts in schedule["close"])
    days = frozenset(label.date() for label in schedule.index)
    return _SessionTable(first, last, opens, closes, days)


def _table(calendar_name: str, day: date) -> _SessionTable:
    """The cached sessions of `calendar_name`, widened first if they do not reach `day`."""
    table = _tables.get(calendar_name)
    if table is not None and table.covers(day):
        return table
    with _tables_lock:
        table = _tables.get(calendar_name)
        if table is not None and table.covers(day):
            return table
        today = datetime.now(UTC).date()
        first = min(today - _WINDOW, day - _WINDOW)
        last = max(today + _WINDOW, day + _WINDOW)
        if table is not None:
            first, last = min(first, table.first), max(last, table.last)
        table = _load(calendar_name, first, last)
        _tables[calendar_name] = table
        return table


def _utc(at: datetime, name: str = "at") -> datetime:
    if not isinstance(at, datetime):
        raise ValueError(f"{name} must be a datetime, got {type(at).__name__}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {at.isoformat()}")
    return at.astimezone(UTC)


def _new_york_midnight(day: date) -> datetime:
    # Midnight always exists in New York: the DST changes happen at 02:00.
    return datetime.combine(day, time(0), tzinfo=NEW_YORK).astimezone(UTC)


class MarketSessions:
    """When the market is open, by the exchange calendar or always (see the module docstring)."""

    def __init__(self, mode: Mode, calendar_name: str = "XNYS") -> None:
        if mode not in ("calendar", "always_open"):
            raise ValueError(f"mode must be 'calendar' or 'always_open', got {mode!r}")
        self.mode: Mode = mode
        self.calendar_name = calendar_name

    def __repr__(self) -> str:
        return f"MarketSessions(mode={self.mode!r}, calendar_name={self.calendar_name!r})"

    def _sessions(self, at: datetime) -> _SessionTable:
        return _table(self.calendar_name, at.astimezone(NEW_YORK).date())

    def _first_close_after(self, table: _SessionTable, at: datetime) -> int:
        """Index of the first session that closes after `at`: the one `at` is in, if any."""
        # One table per question: a wider one may replace it meanwhile, with other indices.
        index = bisect_right(table.closes, at)
        if index == len(table.closes):
            raise RuntimeError(f"no {self.calendar_name} session after {at.isoformat()}")
        return index

    def is_open(self, at: datetime) -> bool:
        at = _utc(at)
        if self.mode == "always_open":
            return True
        table = self._sessions(at)
        return table.opens[self._first_close_after(table, at)] <= at

    def session_close(self, at: datetime) -> datetime | None:
        """The close of the session containing `at`, or None when the market is closed."""
        at = _utc(at)
        if self.mode == "always_open":
            return self.next_close(at)
        table = self._sessions(at)
        index = self._first_close_after(table, at)
        return table.closes[index] if table.opens[index] <= at else None

    def next_close(self, at: datetime) -> datetime:
        """When a DAY order placed at `at` expires: this session's close, else the next one's."""
        at = _utc(at)
        if self.mode == "always_open":
            return _new_york_midnight(at.astimezone(NEW_YORK).date() + timedelta(days=1))
        table = self._sessions(at)
        return table.closes[self._first_close_after(table, at)]

    def next_open(self, at: datetime) -> datetime:
        """The first session open strictly after `at` (in always-open mode, the next midnight)."""
        at = _utc(at)
        if self.mode == "always_open":
            return self.next_close(at)
        table = self._sessions(at)
        index = bisect_right(table.opens, at)
        if index == len(table.opens):
            raise RuntimeError(f"no {self.calendar_name} session after {at.isoformat()}")
        return table.opens[index]

    def previous_close(self, at: datetime) -> datetime:
        """The last session close at or before `at` (in always-open mode, the last midnight)."""
        at = _utc(at)
        if self.mode == "always_open":
            return _new_york_midnight(at.astimezone(NEW_YORK).date())
        table = self._sessions(at)
        index = bisect_right(table.closes, at) - 1
        if index < 0:
            raise RuntimeError(f"no {self.calendar_name} session before {at.isoformat()}")
        return table.closes[index]

    def is_trading_day(self, day: date) -> bool:
        """Whether the exchange holds a session on `day` (its local calendar date)."""
        # A datetime is a date too, and would silently never equal a session label.
        if isinstance(day, datetime) or not isinstance(day, date):
            raise ValueError(f"day must be a date, got {type(day).__name__}")
        if self.mode == "always_open":
            return True
        return day in _table(self.calendar_name, day).days
