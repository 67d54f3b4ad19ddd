"""The Alpaca adapter (real alpaca-py) against a wire-level fake of Alpaca on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from uuid import uuid4

import pytest
from pydantic import ValidationError

from activities.backoff import backoff_delay
from activities.brokers.alpaca_rest import (
    AlpacaBroker,
    AlpacaDataError,
    AlpacaError,
    AlpacaRateLimitedError,
    execution_id_for,
    stream_url_for,
)
from activities.brokers.alpaca_stream import AlpacaTradeStream
from bootstrap.settings import Settings
from bootstrap.vendors import (
    VendorConfigError,
    build_broker,
    build_trade_stream,
    validate_vendor_settings,
)
from contracts.payloads import BrokerEvent, BrokerOrderState, OrderRequest, SubmitResult
from contracts.ports import BrokerOrderNotFoundError, BrokerRejectedError
from domain.orders import OrderSide, OrderStatus, OrderType, TimeInForce
from tests.fakes.alpaca import FakeAlpaca
from tests.fakes.server import Fault


@pytest.fixture
async def fake() -> AsyncIterator[FakeAlpaca]:
    async with FakeAlpaca() as server:
        yield server


def broker_for(fake: FakeAlpaca) -> AlpacaBroker:
    return AlpacaBroker(
        fake.api_key,
        fake.secret_key,
        fake.base_url,
        timeout_seconds=0.3,
        max_rate_limit_wait_seconds=3,
    )


def order(
    quantity: str = "100",
    order_type: OrderType = OrderType.LIMIT,
    time_in_force: TimeInForce = TimeInForce.DAY,
    limit: str | None = "187.25",
    stop: str | None = None,
    symbol: str = "AAPL",
) -> OrderRequest:
    return OrderRequest(
        order_id=uuid4(),
        portfolio_id=uuid4(),
        client_order_id=f"client-{uuid4().hex[:8]}",
        symbol=symbol,
        side=OrderSide.BUY,
        quantity=Decimal(quantity),
        order_type=order_type,
        time_in_force=time_in_force,
        limit_price=None if limit is None else Decimal(limit),
        stop_price=None if stop is None else Decimal(stop),
    )


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


class Recorder:
    """A deliver function that records every (workflow id, event) it is given."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, BrokerEvent]] = []

    async def __call__(self, workflow_id: str, event: BrokerEvent) -> None:
        self.delivered.append((workflow_id, event))

    def events(self) -> list[BrokerEvent]:
        return [event for _, event in self.delivered]

    def kinds(self) -> list[str]:
        return [event.event.value for event in self.events()]


async def nothing() -> None:
    return None


@asynccontextmanager
async def streaming(
    fake: FakeAlpaca, deliver: Recorder, on_reconnect: Callable[[], Awaitable[None]] = nothing
) -> AsyncIterator[AlpacaTradeStream]:
    stream = AlpacaTradeStream(
        fake.api_key,
        fake.secret_key,
        deliver,
        on_reconnect,
        url=fake.stream_url,
        backoff_base_seconds=0.05,
        backoff_cap_seconds=0.2,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(stream.run(stop))
    await until(lambda: stream.connections == 1)
    try:
        yield stream
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


# -- the order lifecycle over the stream -----------------------------------------------------


async def test_an_order_lives_its_life_over_the_stream_and_polling_agrees(fake: FakeAlpaca) -> None:
    broker, recorder = broker_for(fake), Recorder()
    request = order(quantity="100", limit="187.25")
    client_order_id = str(request.order_id)
    async with streaming(fake, recorder):
        result = await broker.submit(request)
        await until(lambda: recorder.kinds() == ["new"])
        await fake.fill(client_order_id, "40", "187.1234")
        await fake.fill(client_order_id, "60", "187.2500")
        await until(lambda: len(recorder.delivered) == 3)

    assert result == SubmitResult(fake.order(client_order_id)["id"], already_existed=False)
    assert {workflow_id for workflow_id, _ in recorder.delivered} == {f"order-{client_order_id}"}
    assert recorder.kinds() == ["new", "partial_fill", "fill"]
    new, partial, fill = recorder.events()
    assert new.broker_order_id == result.broker_order_id
    assert (partial.execution_id, partial.quantity, partial.price, partial.cumulative_quantity) == (
        f"{result.broker_order_id}-cum-40",
        Decimal("40"),
        Decimal("187.1234"),
        Decimal("40"),
    )
    assert (fill.execution_id, fill.quantity, fill.price, fill.cumulative_quantity) == (
        f"{result.broker_order_id}-cum-100",
        Decimal("60"),
        Decimal("187.25"),
        Decimal("100"),
    )

    state = await broker.get_order(client_order_id)
    assert (state.status, state.filled_quantity) == (OrderStatus.FILLED, Decimal("100"))
    assert state.executions == [partial, fill]  # same ids, quantities, prices and times
    assert await broker.positions() == {"AAPL": Decimal("100")}
    account = await broker.account()
    assert account["cash"] == Decimal("100000") - Decimal("40") * Decimal("187.1234") - Decimal(
        "60"
    ) * Decimal("187.25")
    assert set(account) == {"cash", "buying_power", "equity"}


async def test_each_order_type_is_sent_with_its_prices_and_time_in_force_as_exact_strings(
    fake: FakeAlpaca,
) -> None:
    broker = broker_for(fake)
    requests = [
        order("12.5", OrderType.MARKET, TimeInForce.DAY, limit=None),
        order("10", OrderType.LIMIT, TimeInForce.GTC, limit="187.2500"),
        order("10", OrderType.STOP, TimeInForce.IOC, limit=None, stop="180.5"),
        order("10", OrderType.STOP_LIMIT, TimeInForce.FOK, limit="181", stop="180.50"),
    ]
    for request in requests:
        await broker.submit(request)

    bodies = [post.body for post in fake.posts()]
    common = {"symbol": "AAPL", "side": "buy"}
    assert bodies == [
        {**common, "qty": "12.5", "type": "market", "time_in_force": "day",
         "client_order_id": str(requests[0].order_id)},
        {**common, "qty": "10", "type": "limit", "time_in_force": "gtc",
         "client_order_id": str(requests[1].order_id), "limit_price": "187.25"},
        {**common, "qty": "10", "type": "stop", "time_in_force": "ioc",
         "client_order_id": str(requests[2].order_id), "stop_price": "180.5"},
        {**common, "qty": "10", "type": "stop_limit", "time_in_force": "fok",
         "client_order_id": str(requests[3].order_id), "limit_price": "181",
         "stop_price": "180.5"},
    ]  # fmt: skip


# -- ambiguous submits: one order at the broker, whatever happens -----------------------------


async def test_a_submit_that_timed_out_is_looked_up_through_a_5xx_and_a_429_and_never_resent(
    fake: FakeAlpaca,
) -> None:
    broker = broker_for(fake)
    request = order()
    fake.faults.add("submit", Fault(accept=True, delay=1.0))  # placed; the answer never comes
    fake.faults.add("by_client_order_id", Fault(status=503), Fault(status=429, reset_in=1))

    with pytest.raises(AlpacaError, match="look-up by client order id failed"):
        await broker.submit(request)  # timeout, then the look-up answers 503
    with pytest.raises(AlpacaRateLimitedError):
        await broker.submit(request)  # Temporal's retry: look-up first, which answers 429
    result = await broker.submit(request)  # waits for the reset, looks up, finds it

    assert result == SubmitResult(fake.order(str(request.order_id))["id"], already_existed=True)
    assert len(fake.orders) == 1
    assert len(fake.posts()) == 1


async def test_a_submit_answered_5xx_without_placing_is_sent_again_once_after_a_look_up(
    fake: FakeAlpaca,
) -> None:
    broker = broker_for(fake)
    request = order()
    fake.faults.add("submit", Fault(status=502))

    with pytest.raises(AlpacaError, match="no such order: the next attempt sends it again"):
        await broker.submit(request)
    result = await broker.submit(request)

    assert result.already_existed is False
    assert len(fake.orders) == 1
    assert [r.route for r in fake.requests] == [
        "submit",
        "by_client_order_id",
        "by_client_order_id",  # the retry looks up before sending again
        "submit",
    ]


async def test_a_429_on_submit_is_sent_once_and_looked_up_after_the_reset_header(
    fake: FakeAlpaca,
) -> None:
    broker = broker_for(fake)
    fake.faults.add("submit", Fault(status=429, reset_in=1))

    with pytest.raises(AlpacaError, match="no such order"):
        await broker.submit(order())

    (post,) = fake.posts()  # alpaca-py's own 429 retries are off
    (lookup,) = [r for r in fake.requests if r.route == "by_client_order_id"]
    assert lookup.at >= math.ceil(post.at + 1)  # not before X-RateLimit-Reset
    assert fake.orders == {}


async def test_a_duplicate_client_order_id_answers_the_existing_order(fake: FakeAlpaca) -> None:
    request = order()
    first = await broker_for(fake).submit(request)
    # Another process (a restarted worker) knows nothing of the first attempt.
    again = await broker_for(fake).submit(request)

    assert again == SubmitResult(first.broker_order_id, already_existed=True)
    assert len(fake.orders) == 1
    assert len(fake.posts()) == 2  # the second one was refused as a duplicate


async def test_a_rate_limit_far_away_refuses_calls_without_spending_requests(
    fake: FakeAlpaca,
) -> None:
    broker = broker_for(fake)
    fake.faults.add("account", Fault(status=429, reset_in=30))
    with pytest.raises(AlpacaRateLimitedError):
        await broker.account()
    sent = len(fake.requests)

    with pytest.raises(AlpacaRateLimitedError, match="request budget"):
        await broker.get_order(str(uuid4()))
    with pytest.raises(AlpacaRateLimitedError):
        await broker.submit(order())
    assert await broker.ready() is False

    assert len(fake.requests) == sent


async def test_business_refusals_are_broker_rejections(fake: FakeAlpaca) -> None:
    broker = broker_for(fake)
    with pytest.raises(BrokerRejectedError, match="insufficient buying power"):
        await broker.submit(order(quantity="10000"))
    with pytest.raises(BrokerRejectedError, match="not found"):
        await broker.submit(order(symbol="ZZZZ"))
    assert fake.orders == {}


# -- the stream: reconnects, unknown and malformed events -------------------------------------


async def test_a_stream_dropped_mid_fill_reconnects_and_polling_gives_the_same_executions(
    fake: FakeAlpaca,
) -> None:
    broker, recorder = broker_for(fake), Recorder()
    request = order(quantity="100")
    client_order_id = str(request.order_id)
    polled: list[BrokerOrderState] = []

    async def reconcile() -> None:  # the worker signals "reconcile"; the order polls
        if fake.orders:
            polled.append(await broker.get_order(client_order_id))

    async with streaming(fake, recorder, reconcile) as stream:
        await broker.submit(request)
        await fake.fill(client_order_id, "40", "187.10")
        await until(lambda: recorder.kinds() == ["new", "partial_fill"])
        await fake.fill(client_order_id, "60", "187.20", drop_first=True)  # lost with the socket
        await until(lambda: len(polled) == 1)
        await fake.send_update(fake.last_update)  # a late redelivery of the lost fill
        await until(lambda: len(recorder.delivered) == 3)
        assert stream.connections == 2

    streamed = [event for event in recorder.events() if event.event.is_fill]
    assert polled[0].executions == streamed  # the same ids, quantities and prices both ways
    applied: dict[str, BrokerEvent] = {}  # the workflow applies each execution id once
    for execution in streamed + polled[0].executions:
        applied.setdefault(execution.execution_id or "", execution)
    broker_order_id = fake.order(client_order_id)["id"]
    assert sorted(applied) == sorted(
        execution_id_for(broker_order_id, Decimal(cumulative)) for cumulative in ("40", "100")
    )
    assert sum(e.quantity or 0 for e in applied.values()) == Decimal("100")
    assert sum((e.quantity or 0) * (e.price or 0) for e in applied.values()) == Decimal(
        "40"
    ) * Decimal("187.10") + Decimal("60") * Decimal("187.20")


async def test_unknown_and_malformed_trade_updates_are_logged_and_not_delivered(
    fake: FakeAlpaca, caplog: pytest.LogCaptureFixture
) -> None:
    broker, recorder = broker_for(fake), Recorder()
    request = order()
    caplog.set_level(logging.WARNING, logger="activities.brokers.alpaca_rest")
    async with streaming(fake, recorder) as stream:
        await broker.submit(request)
        await until(lambda: recorder.kinds() == ["new"])
        placed = dict(fake.order(str(request.order_id)))
        await fake.send_update({"event": "margin_call_maybe", "order": placed})
        filled = {
            **placed,
            "filled_qty": "10",
            "filled_avg_price": "0",
            "status": "partially_filled",
        }
        await fake.send_update(
            {"event": "partial_fill", "timestamp": placed["created_at"], "order": filled,
             "qty": "10", "price": "0"}
        )  # fmt: skip
        await fake.close_order(fake.order(str(request.order_id)), "canceled")
        await until(lambda: len(recorder.delivered) == 2)
        assert stream.connections == 1  # neither was fatal

    assert recorder.kinds() == ["new", "canceled"]
    assert "unknown Alpaca trade update event 'margin_call_maybe'" in caplog.text
    assert "malformed Alpaca trade update refused" in caplog.text
    assert recorder.events()[1].cumulative_quantity == Decimal("0")


async def test_the_stream_backs_off_with_jitter_and_calls_the_hook_after_every_connect(
    fake: FakeAlpaca,
) -> None:
    hooks: list[int] = []

    async def hook() -> None:
        hooks.append(fake.stream_connections)

    async with streaming(fake, Recorder(), hook) as stream:
        await fake.drop_streams()
        await until(lambda: stream.connections == 2)
        await fake.drop_streams()
        await until(lambda: stream.connections == 3)
    assert hooks == [1, 2, 3]

    delays = [backoff_delay(failures, 1.0, 30.0) for failures in range(1, 9)]
    for failures, delay in enumerate(delays, start=1):
        ceiling = min(30.0, 2.0 ** (failures - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert len({backoff_delay(3, 1.0, 30.0) for _ in range(20)}) > 1  # jittered


# -- polling, cancel, reads -------------------------------------------------------------------


async def test_polling_reads_fills_across_pages_and_waits_for_a_lagging_fill_history(
    fake: FakeAlpaca,
) -> None:
    broker = broker_for(fake)
    other, mine = order(quantity="150", limit="1"), order(quantity="100")
    await broker.submit(other)
    await broker.submit(mine)
    for _ in range(150):  # another order's fills fill the first page of activities
        await fake.fill(str(other.order_id), "1", "1")
    await fake.fill(str(mine.order_id), "30", "187.01")
    await fake.fill(str(mine.order_id), "70", "187.02")
    fake.activity_lag = 1

    with pytest.raises(AlpacaError, match="lists fills up to 30 so far"):
        await broker.get_order(str(mine.order_id))
    fake.activity_lag = 0
    state = await broker.get_order(str(mine.order_id))

    assert [(e.quantity, e.price) for e in state.executions] == [
        (Decimal("30"), Decimal("187.01")),
        (Decimal("70"), Decimal("187.02")),
    ]
    pages = [r for r in fake.requests if r.route == "activities"]
    assert any("page_token" in r.query for r in pages)


async def test_cancel_answers_the_state_after_and_is_harmless_twice(fake: FakeAlpaca) -> None:
    broker = broker_for(fake)
    request = order(quantity="100")
    client_order_id = str(request.order_id)
    await broker.submit(request)
    await fake.fill(client_order_id, "25", "187.00")

    first = await broker.cancel(client_order_id)
    second = await broker.cancel(client_order_id)  # Alpaca answers 422: not cancelable

    assert first == second
    assert (first.status, first.filled_quantity) == (OrderStatus.CANCELED, Decimal("25"))
    assert [e.quantity for e in first.executions] == [Decimal("25")]
    with pytest.raises(BrokerOrderNotFoundError):
        await broker.cancel(str(uuid4()))
    with pytest.raises(BrokerOrderNotFoundError):
        await broker.get_order(str(uuid4()))


async def test_malformed_vendor_answers_are_refused_with_a_clear_error(fake: FakeAlpaca) -> None:
    broker = broker_for(fake)
    request = order()
    client_order_id = str(request.order_id)
    await broker.submit(request)
    placed = fake.order(client_order_id)

    placed["status"] = "teleported"
    with pytest.raises(AlpacaDataError, match="unknown status 'teleported'"):
        await broker.get_order(client_order_id)
    placed.update(status="partially_filled", filled_qty="10", filled_avg_price="0")
    with pytest.raises(AlpacaDataError, match="average price 0"):
        await broker.get_order(client_order_id)
    fake.faults.add("by_client_order_id", Fault(body=None))
    with pytest.raises(AlpacaDataError, match="expected a JSON object"):
        await broker.get_order(client_order_id)
    fake.faults.add("account", Fault(body={"cash": None, "buying_power": "1", "equity": "1"}))
    with pytest.raises(AlpacaDataError, match="cash is missing"):
        await broker.account()
    fake.faults.add("positions", Fault(body={"positions": []}))
    with pytest.raises(AlpacaDataError, match="not a list"):
        await broker.positions()


async def test_ready_reads_the_account_once_per_ttl(fake: FakeAlpaca) -> None:
    broker = broker_for(fake)
    assert await broker.ready() is True
    assert await broker.ready() is True
    assert sum(1 for r in fake.requests if r.route == "account") == 1


# -- selection by configuration ---------------------------------------------------------------


def test_without_keys_the_paper_venue_stays_the_broker() -> None:
    settings = Settings(alpaca_api_key=None, alpaca_secret_key=None, polygon_api_key=None)
    venue = object()
    validate_vendor_settings(settings)
    assert build_broker(settings, venue) is venue  # type: ignore[arg-type]
    assert build_trade_stream(settings, Recorder(), nothing) is None


def test_with_keys_alpaca_is_the_broker_and_its_stream_follows_the_base_url() -> None:
    settings = Settings(
        alpaca_api_key="key",
        alpaca_secret_key="secret",
        alpaca_base_url="https://paper-api.alpaca.markets/v2/",
        polygon_api_key="poly",
    )
    validate_vendor_settings(settings)
    broker = build_broker(settings, object())  # type: ignore[arg-type]
    assert isinstance(broker, AlpacaBroker)
    assert broker.base_url == "https://paper-api.alpaca.markets"
    stream = build_trade_stream(settings, Recorder(), nothing)
    assert stream is not None and stream.url == "wss://paper-api.alpaca.markets/stream"
    assert stream_url_for("http://127.0.0.1:9000") == "ws://127.0.0.1:9000/stream"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"alpaca_secret_key": None}, "only ALPACA_API_KEY is set"),
        ({"alpaca_api_key": "key", "alpaca_secret_key": "  "}, "only ALPACA_API_KEY is set"),
        ({"alpaca_api_key": "key with space"}, "contains whitespace"),
        ({"alpaca_base_url": "https://api.alpaca.markets"}, "live trading at Alpaca needs real"),
    ],
)
def test_a_misconfigured_alpaca_fails_at_start_with_a_clear_message(
    fields: dict[str, str | None], message: str
) -> None:
    settings = Settings(**{"alpaca_api_key": "key", "alpaca_secret_key": "secret", **fields})
    with pytest.raises(VendorConfigError, match=message):
        validate_vendor_settings(settings)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"alpaca_base_url": "paper-api.alpaca.markets"}, "must look like https://host"),
        ({"alpaca_base_url": "http://paper-api.alpaca.markets"}, "only allowed for a loopback"),
        ({"alpaca_base_url": "https://paper-api.alpaca.markets/v1/x"}, "must be the API root"),
        ({"alpaca_base_url": "https://host:port"}, "must look like https://host"),
        ({"alpaca_base_url": "https://u:p@paper-api.alpaca.markets"}, "must not carry"),
        ({"alpaca_stream_url": "https://paper-api.alpaca.markets/stream"}, "wss://host"),
    ],
)
def test_a_malformed_alpaca_url_fails_when_the_settings_are_built_naming_it(
    fields: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as raised:
        Settings(**fields)
    assert next(iter(fields)).upper() in str(raised.value)
