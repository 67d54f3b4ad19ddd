"""The client commands as a newcomer uses them, against the API served by uvicorn: a market
order waits for its fill and shows it, symbols in any case, money as dollars, a quote, and
an API that does not answer is one line naming where its address comes from."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from activities.store.postgres import free_port
from api import client_cli as commands
from api.client import Credentials
from tests.api.conftest import Api

pytestmark = pytest.mark.integration


async def trading(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = await asyncio.to_thread(commands.main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def fields(card: str) -> dict[str, str]:
    """A printed card (`name  value` lines) as a dict."""
    found = {}
    for line in card.splitlines():
        name, _, value = line.partition("  ")
        if value:
            found[name.strip()] = value.strip()
    return found


async def test_a_market_order_waits_for_its_fill_and_shows_price_and_time(
    api: Api, credentials: Path, capsys: pytest.CaptureFixture[str]
):
    creds = ["--credentials", str(credentials)]
    status, out, err = await trading(capsys, "order", "place", "aapl", "2", "buy", *creds)

    assert status == 0, err
    order = fields(out)
    assert order["symbol"] == "AAPL" and order["status"] == "filled"
    assert order["filled"] == "2" and order["average fill"].startswith("$150.0")
    assert order["fill time"].endswith("s after it was placed") and "filled at" in order

    status, out, _ = await trading(capsys, "positions", *creds)
    header, row = out.splitlines()
    assert row.split()[:3] == ["AAPL", "long", "2"] and row.split()[3].startswith("$150.0")
    assert header.index("VALUE") + len("VALUE") == row.index("$300") + len(row.split()[5])

    status, out, _ = await trading(capsys, "positions", "--json", *creds)
    assert [p["symbol"] for p in json.loads(out)] == ["AAPL"]


async def test_a_resting_limit_order_does_not_wait_unless_asked(
    api: Api, credentials: Path, capsys: pytest.CaptureFixture[str]
):
    creds = ["--credentials", str(credentials)]
    place = ["order", "place", "MSFT", "1", "buy", "--limit", "300", "--tif", "gtc", *creds]

    status, out, _ = await trading(capsys, *place)
    assert status == 0 and fields(out)["status"] == "accepted"
    assert fields(out)["limit price"] == "$300.00"

    status, out, err = await trading(capsys, *place[:-2], "--wait", "--timeout", "0.5", *creds)
    assert status == 0 and fields(out)["status"] in ("accepted", "submitted")
    assert err.startswith("still ") and "trading order get" in err


async def test_quote_prints_the_touch_in_dollars(
    api: Api, credentials: Path, capsys: pytest.CaptureFixture[str]
):
    status, out, _ = await trading(capsys, "quote", "msft", "--credentials", str(credentials))
    quote = fields(out)
    assert status == 0 and quote["symbol"] == "MSFT"
    assert quote["bid"].startswith("$400.00 x ") and quote["ask"].startswith("$400.10 x ")
    assert quote["spread"] == "$0.10"

    status, out, _ = await trading(
        capsys, "quote", "MSFT", "--json", "--credentials", str(credentials)
    )
    assert json.loads(out)["ask_price"] == "400.10"


async def test_an_api_that_does_not_answer_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    path = tmp_path / "credentials.json"
    Credentials(f"http://127.0.0.1:{free_port()}", "key", "secret").save(path)

    status, out, err = await trading(capsys, "portfolio", "--credentials", str(path))

    assert (status, out) == (1, "") and err.count("\n") == 1
    assert err.startswith(f"error: cannot reach the API (api_url in {path}): ")
