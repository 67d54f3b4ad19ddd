"""The project's data converter: exact money through every payload, and one set of pydantic
adapters per process however many converters the worker builds (one per workflow run)."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated
from uuid import uuid4

from bootstrap.converter import DATA_CONVERTER, PayloadConverter, _cached_adapter, type_adapter
from contracts.payloads import OrderSnapshot
from domain.orders import OrderSide, OrderStatus, OrderType, TimeInForce


def snapshot() -> OrderSnapshot:
    now = datetime(2026, 12, 2, 15, 30, tzinfo=UTC)
    return OrderSnapshot(
        order_id=uuid4(),
        portfolio_id=uuid4(),
        client_order_id="c-1",
        symbol="AAPL",
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        time_in_force=TimeInForce.DAY,
        quantity=Decimal("3"),
        status=OrderStatus.PARTIALLY_FILLED,
        filled_quantity=Decimal("1"),
        filled_notional=Decimal("189.123456789"),
        average_fill_price=Decimal("189.123456789"),
        commission=Decimal("0.01"),
        created_at=now,
        updated_at=now,
        version=4,
        limit_price=Decimal("190.10"),
    )


def test_a_snapshot_round_trips_exactly_with_money_as_decimal_text() -> None:
    order = snapshot()
    converter = DATA_CONVERTER.payload_converter
    payloads = converter.to_payloads([order])
    assert b'"189.123456789"' in payloads[0].data  # a string, never a float
    (back,) = converter.from_payloads(payloads, [OrderSnapshot])
    assert back == order
    assert isinstance(back.filled_notional, Decimal)


def test_every_converter_instance_reads_through_the_same_adapters() -> None:
    # The worker builds a payload converter for every workflow run; the adapters must not be
    # rebuilt with it.
    first, second = PayloadConverter(), PayloadConverter()
    payloads = first.to_payloads([snapshot()])
    first.from_payloads(payloads, [OrderSnapshot])
    adapter = type_adapter(OrderSnapshot)
    built = _cached_adapter.cache_info().misses
    second.from_payloads(payloads, [OrderSnapshot])
    assert _cached_adapter.cache_info().misses == built
    assert type_adapter(OrderSnapshot) is adapter


def test_an_unhashable_hint_converts_without_the_cache() -> None:
    hint = Annotated[Decimal, ["unhashable metadata"]]
    payloads = DATA_CONVERTER.payload_converter.to_payloads([Decimal("1.10")])
    (back,) = DATA_CONVERTER.payload_converter.from_payloads(payloads, [hint])  # type: ignore[list-item]
    assert back == Decimal("1.10")
    assert type_adapter(hint) is not type_adapter(hint)
