"""Trading sessions: the real NYSE calendar (holidays, early closes, DST) and always-open mode."""

from datetime import UTC, date, datetime, timedelta

import pytest

from activities.calendar.sessions import NEW_YORK, MarketSessions

MICROSECOND = timedelta(microseconds=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def nyse() -> MarketSessions:
    return MarketSessions("calendar")


@pytest.fixture(scope="module")
def always() -> MarketSessions:
    return MarketSessions("always_open")


@pytest.mark.parametrize(
    ("day", "open_utc", "close_utc"),
    [
        # New York is UTC-5 in winter and UTC-4 in summer: the session moves in UTC.
        (date(2026, 12, 1), utc(2026, 12, 1, 14, 30), utc(2026, 12, 1, 21, 0)),
        (date(2026, 7, 15), utc(2026, 7, 15, 13, 30), utc(2026, 7, 15, 20, 0)),
        # The first trading days either side of the March 2027 clock change.
        (date(2027, 3, 12), utc(2027, 3, 12, 14, 30), utc(2027, 3, 12, 21, 0)),
        (date(2027, 3, 15), utc(2027, 3, 15, 13, 30), utc(2027, 3, 15, 20, 0)),
    ],
)
def test_a_regular_day_is_open_from_9_30_to_16_00_new_york_time(nyse, day, open_utc, close_utc):
    assert open_utc.astimezone(NEW_YORK).time().isoformat() == "09:30:00"
    assert close_utc.astimezone(NEW_YORK).time().isoformat() == "16:00:00"
    assert nyse.is_trading_day(day)
    assert not nyse.is_open(open_utc - MICROSECOND)
    assert nyse.is_open(open_utc)
    assert nyse.is_open(close_utc - MICROSECOND)
    assert not nyse.is_open(close_utc)
    assert nyse.session_close(open_utc + timedelta(hours=2)) == close_utc
    assert nyse.session_close(close_utc) is None
    assert nyse.next_close(open_utc - timedelta(hours=1)) == close_utc


def test_christmas_day_is_a_holiday(nyse):
    christmas_noon = datetime(2026, 12, 25, 12, tzinfo=NEW_YORK)
    assert not nyse.is_trading_day(date(2026, 12, 25))
    assert not nyse.is_open(christmas_noon)
    assert nyse.session_close(christmas_noon) is None
    assert nyse.next_close(christmas_noon) == utc(2026, 12, 28, 21, 0)
    assert nyse.next_open(christmas_noon) == utc(2026, 12, 28, 14, 30)


def test_the_day_after_thanksgiving_closes_early_at_13_00_new_york_time(nyse):
    assert nyse.is_trading_day(date(2026, 11, 27))
    assert nyse.session_close(utc(2026, 11, 27, 15, 0)) == utc(2026, 11, 27, 18, 0)
    assert nyse.is_open(utc(2026, 11, 27, 18, 0) - MICROSECOND)
    assert not nyse.is_open(utc(2026, 11, 27, 18, 0))
    assert not nyse.is_open(utc(2026, 11, 27, 20, 0))
    assert nyse.next_close(utc(2026, 11, 27, 18, 0)) == utc(2026, 11, 30, 21, 0)
    assert not nyse.is_trading_day(date(2026, 11, 26))


def test_the_market_is_closed_over_the_weekend(nyse):
    assert not nyse.is_trading_day(date(2026, 11, 28))
    assert not nyse.is_trading_day(date(2026, 11, 29))
    assert not nyse.is_open(utc(2026, 11, 28, 16, 0))
    assert nyse.session_close(utc(2026, 11, 29, 16, 0)) is None


def test_a_day_order_placed_on_a_saturday_expires_at_mondays_close(nyse):
    saturday = utc(2026, 11, 28, 12, 0)
    assert nyse.next_close(saturday) == utc(2026, 11, 30, 21, 0)
    assert nyse.next_open(saturday) == utc(2026, 11, 30, 14, 30)
    assert nyse.previous_close(saturday) == utc(2026, 11, 27, 18, 0)


def test_next_open_and_previous_close_cross_the_clock_change(nyse):
    saturday = utc(2027, 3, 13, 12, 0)
    assert nyse.previous_close(saturday) == utc(2027, 3, 12, 21, 0)
    assert nyse.next_open(saturday) == utc(2027, 3, 15, 13, 30)


def test_the_open_session_has_no_next_open_until_tomorrow(nyse):
    assert nyse.next_open(utc(2026, 12, 1, 15, 0)) == utc(2026, 12, 2, 14, 30)
    assert nyse.previous_close(utc(2026, 12, 1, 21, 0)) == utc(2026, 12, 1, 21, 0)


def test_answers_are_utc_whatever_the_zone_of_the_question(nyse):
    close = nyse.session_close(datetime(2026, 11, 27, 10, 0, tzinfo=NEW_YORK))
    assert close == utc(2026, 11, 27, 18, 0)
    assert close is not None and close.tzinfo is UTC


def test_a_naive_datetime_is_refused(nyse, always):
    naive = datetime(2026, 12, 1, 15, 0)
    for sessions in (nyse, always):
        for method in (
            sessions.is_open,
            sessions.session_close,
            sessions.next_close,
            sessions.next_open,
            sessions.previous_close,
        ):
            with pytest.raises(ValueError, match="timezone-aware"):
                method(naive)


def test_is_trading_day_wants_a_date_not_a_datetime(nyse):
    with pytest.raises(ValueError):
        nyse.is_trading_day(utc(2026, 12, 1, 15, 0))


def test_dates_years_away_are_answered_from_the_real_calendar(nyse):
    assert not nyse.is_trading_day(date(2031, 12, 25))
    assert nyse.is_trading_day(date(2031, 12, 24))
    assert nyse.session_close(utc(2020, 11, 27, 15, 0)) == utc(2020, 11, 27, 18, 0)


def test_always_open_mode_is_open_at_every_instant(always):
    for at in (utc(2026, 11, 28, 3, 0), datetime(2026, 12, 25, 12, tzinfo=NEW_YORK)):
        assert always.is_open(at)
    assert always.is_trading_day(date(2026, 12, 25))


@pytest.mark.parametrize(
    ("at", "previous_midnight", "next_midnight"),
    [
        # winter: UTC-5
        (utc(2026, 12, 25, 15, 0), utc(2026, 12, 25, 5, 0), utc(2026, 12, 26, 5, 0)),
        # summer: UTC-4
        (utc(2026, 7, 4, 15, 0), utc(2026, 7, 4, 4, 0), utc(2026, 7, 5, 4, 0)),
        # still the 27th in New York
        (utc(2026, 11, 28, 3, 0), utc(2026, 11, 27, 5, 0), utc(2026, 11, 28, 5, 0)),
        # exactly midnight: that session has just closed, the next one closes tomorrow
        (utc(2026, 11, 28, 5, 0), utc(2026, 11, 28, 5, 0), utc(2026, 11, 29, 5, 0)),
        # the 23-hour day when the clocks go forward
        (utc(2027, 3, 14, 12, 0), utc(2027, 3, 14, 5, 0), utc(2027, 3, 15, 4, 0)),
    ],
)
def test_in_always_open_mode_a_day_order_expires_at_the_next_new_york_midnight(
    always, at, previous_midnight, next_midnight
):
    assert always.session_close(at) == next_midnight
    assert always.next_close(at) == next_midnight
    assert always.next_open(at) == next_midnight
    assert always.previous_close(at) == previous_midnight


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        MarketSessions("sometimes")  # type: ignore[arg-type]
