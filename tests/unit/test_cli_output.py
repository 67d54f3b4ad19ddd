"""What the `trading` commands print: money as the README promises ("$1,234.56"),
quantities as typed, aligned tables, upper-case symbols, and which orders wait for their
outcome by default."""

from __future__ import annotations

from decimal import Decimal

import pytest

from api.cli_output import Percent, Usd, as_json, cell, table, usd
from api.client_cli import waits_by_default
from worker.cli import build_parser


@pytest.mark.parametrize(
    "amount, shown",
    [
        ("1234.56", "$1,234.56"),
        ("-0.5", "-$0.50"),
        ("0.1234", "$0.1234"),  # a sub-dollar price keeps its tick
        ("150.0000", "$150.00"),  # NUMERIC scale is not shown
        ("1E+5", "$100,000.00"),
        ("0", "$0.00"),
        ("1234567.891", "$1,234,567.891"),
    ],
)
def test_money_is_dollars_with_thousands_separators(amount: str, shown: str):
    assert usd(Decimal(amount)) == shown == str(Usd(Decimal(amount))) == cell(Usd(Decimal(amount)))


def test_quantities_and_percentages_print_as_typed():
    assert cell(Decimal("10.000000")) == "10"
    assert cell(Decimal("0.500000")) == "0.5"
    assert cell(Decimal("1E+3")) == "1,000"
    assert cell(Percent(Decimal("3.756"))) == "3.76%"
    assert cell(None) == cell(Usd(None)) == "-"


def test_tables_align_money_and_numbers_right_and_text_left():
    text = table(
        ["SYMBOL", "QTY", "PRICE"],
        [["AAPL", Decimal("10"), Usd(Decimal("187.5"))], ["MSFT", Decimal("2.5"), Usd(None)]],
    )
    assert text.splitlines() == [
        "SYMBOL  QTY    PRICE",
        "AAPL     10  $187.50",
        "MSFT    2.5        -",
    ]


def test_json_keeps_decimals_exact():
    assert as_json({"cash": Decimal("0.10"), "price": Usd(Decimal("1.5"))}) == (
        '{\n  "cash": "0.10",\n  "price": "1.5"\n}'
    )


def place(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(["order", "place", *argv])


def test_symbols_are_upper_cased():
    assert place("aapl", "1", "buy").symbol == "AAPL"
    assert build_parser().parse_args(["quote", "msft"]).symbol == "MSFT"
    assert build_parser().parse_args(["order", "list", "--symbol", "ibm"]).symbol == "IBM"


@pytest.mark.parametrize(
    "argv, waits",
    [
        (["AAPL", "1", "buy"], True),  # market
        (["AAPL", "1", "buy", "--limit", "100", "--tif", "ioc"], True),
        (["AAPL", "1", "buy", "--limit", "100", "--tif", "fok"], True),
        (["AAPL", "1", "buy", "--limit", "100"], False),  # a resting limit order
        (["AAPL", "1", "sell", "--stop", "90", "--tif", "gtc"], False),
        (["AAPL", "1", "buy", "--no-wait"], False),
        (["AAPL", "1", "buy", "--limit", "100", "--wait"], True),
    ],
)
def test_market_ioc_and_fok_orders_wait_for_their_outcome_by_default(argv, waits):  # type: ignore[no-untyped-def]
    assert waits_by_default(place(*argv)) is waits


def test_every_listing_command_has_json():
    listings = [
        ["order", "list"],
        ["positions"],
        ["portfolio"],
        ["quote", "AAPL"],
        ["portfolios", "list"],
        ["orders", "stuck"],
        ["reconciliation", "show"],
        ["migrate", "status"],
    ]
    for argv in listings:
        assert build_parser().parse_args([*argv, "--json"]).json is True, argv
