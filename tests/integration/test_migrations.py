"""Migrations against a real server, and the schema refusing rows that break an invariant."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from activities.store.migrations import (
    MigrationError,
    load_migrations,
    migrate_down,
    migrate_up,
    parse_migration,
    status,
)

pytestmark = pytest.mark.integration

CATALOG = """
SELECT c.relkind::text || ':' || c.relname FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace
UNION ALL
SELECT 't:' || t.typname FROM pg_type t
WHERE t.typnamespace = 'public'::regnamespace AND t.typtype = 'd'
"""


@pytest.fixture
async def conn(empty_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(empty_database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def catalog(conn: asyncpg.Connection) -> set[str]:
    return {row[0] for row in await conn.fetch(CATALOG)}


def write_migrations(folder: Path, *bodies: tuple[str, str, str]) -> Path:
    folder.mkdir(exist_ok=True)
    for version, (name, up, down) in enumerate(bodies, start=1):
        text = f"-- migrate:up\n{up}\n-- migrate:down\n{down}\n"
        (folder / f"{version:04d}_{name}.sql").write_text(text)
    return folder


TWO_TABLES = (
    ("first", "CREATE TABLE a (id int PRIMARY KEY);", "DROP TABLE a;"),
    ("second", "CREATE TABLE b (id int PRIMARY KEY);", "DROP TABLE b;"),
)


# -- the project's migrations -----------------------------------------------------------------


async def test_migrate_up_down_up_round_trip_restores_the_schema(conn: asyncpg.Connection):
    before = await catalog(conn)
    applied = await migrate_up(conn)
    assert [m.version for m in applied] == [m.version for m in load_migrations()]
    migrated = await catalog(conn)
    assert {"r:orders", "r:executions", "r:venue_outbox", "t:money_amount"} <= migrated

    reverted = await migrate_down(conn, steps=len(applied))
    assert [m.version for m in reverted] == [m.version for m in reversed(applied)]
    # Down drops everything up created; only the bookkeeping table stays.
    assert await catalog(conn) - before == {"r:schema_migrations", "i:schema_migrations_pkey"}

    assert len(await migrate_up(conn)) == len(applied)
    assert await catalog(conn) == migrated


async def test_status_reports_pending_then_applied_migrations(conn: asyncpg.Connection):
    pending = await status(conn)
    assert pending and all(not row.applied and row.checksum_ok is None for row in pending)
    assert pending[0].version == 1 and pending[0].name == "initial"

    await migrate_up(conn)
    applied = await status(conn)
    assert all(row.applied and row.checksum_ok for row in applied)
    assert all(row.applied_at is not None and row.applied_at.tzinfo for row in applied)


async def test_migrate_up_twice_applies_nothing_the_second_time(conn: asyncpg.Connection):
    await migrate_up(conn)
    assert await migrate_up(conn) == []


async def test_concurrent_migrate_up_applies_each_migration_exactly_once(
    empty_database_url: str,
):
    first, second = [await asyncpg.connect(empty_database_url) for _ in range(2)]
    try:
        results = await asyncio.gather(migrate_up(first), migrate_up(second))
        rows = await first.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await first.close()
        await second.close()
    total = len(load_migrations())
    assert sorted(len(applied) for applied in results) == [0, total]
    assert [row["version"] for row in rows] == list(range(1, total + 1))


async def test_migrate_up_accepts_a_pool(empty_database_url: str):
    pool = await asyncpg.create_pool(empty_database_url, min_size=1, max_size=2)
    try:
        assert await migrate_up(pool)
        assert all(row.applied for row in await status(pool))
    finally:
        await pool.close()


# -- rules, on a migrations folder of our own ---------------------------------------------------


async def test_target_applies_up_to_that_version(conn: asyncpg.Connection, tmp_path: Path):
    source = write_migrations(tmp_path / "m", *TWO_TABLES)
    assert [m.name for m in await migrate_up(conn, target=1, source=source)] == ["first"]
    assert [r.applied for r in await status(conn, source=source)] == [True, False]
    with pytest.raises(MigrationError, match="migrate_down"):
        await migrate_up(conn, target=0, source=source)
    assert [m.name for m in await migrate_up(conn, source=source)] == ["second"]


async def test_edited_applied_migration_is_refused_naming_the_file(
    conn: asyncpg.Connection, tmp_path: Path
):
    source = write_migrations(tmp_path / "m", *TWO_TABLES)
    await migrate_up(conn, target=1, source=source)
    edited = source / "0001_first.sql"
    edited.write_text(edited.read_text().replace("id int", "id bigint"))

    with pytest.raises(MigrationError, match=r"0001_first\.sql was edited"):
        await migrate_up(conn, source=source)
    with pytest.raises(MigrationError, match=r"0001_first\.sql was edited"):
        await migrate_down(conn, source=source)
    assert [r.checksum_ok for r in await status(conn, source=source)] == [False, None]
    assert await conn.fetchval("SELECT to_regclass('b')") is None  # nothing applied


async def test_line_endings_do_not_change_the_checksum():
    text = "-- migrate:up\nCREATE TABLE a (id int);\n-- migrate:down\nDROP TABLE a;\n"
    unix = parse_migration("0001_a.sql", text)
    windows = parse_migration("0001_a.sql", text.replace("\n", "\r\n"))
    assert unix.checksum == windows.checksum


async def test_applied_version_without_a_file_is_refused(conn: asyncpg.Connection, tmp_path: Path):
    source = write_migrations(tmp_path / "m", *TWO_TABLES)
    await migrate_up(conn, source=source)
    (source / "0002_second.sql").unlink()
    with pytest.raises(MigrationError, match="newer than this code"):
        await migrate_up(conn, source=source)
    unknown = (await status(conn, source=source))[-1]
    assert (unknown.version, unknown.name, unknown.checksum_ok) == (2, "second", False)


async def test_gap_in_applied_versions_is_refused(conn: asyncpg.Connection, tmp_path: Path):
    source = write_migrations(tmp_path / "m", *TWO_TABLES)
    await migrate_up(conn, source=source)
    await conn.execute("DELETE FROM schema_migrations WHERE version = 1")
    with pytest.raises(MigrationError, match="gap"):
        await migrate_up(conn, source=source)


def test_gap_in_migration_files_is_refused(tmp_path: Path):
    source = write_migrations(tmp_path / "m", *TWO_TABLES)
    (source / "0002_second.sql").rename(source / "0003_second.sql")
    with pytest.raises(MigrationError, match="0003_second.sql: expected version 0002"):
        load_migrations(source)


@pytest.mark.parametrize(
    "text",
    [
        "CREATE TABLE a (id int);",
        "-- migrate:down\nDROP TABLE a;\n-- migrate:up\nCREATE TABLE a (id int);",
        "CREATE TABLE x (id int);\n-- migrate:up\nCREATE TABLE a (id int);\n-- migrate:down\n",
    ],
    ids=["no markers", "down before up", "sql before up"],
)
def test_malformed_migration_file_is_refused(text: str):
    with pytest.raises(MigrationError, match="0001_a.sql"):
        parse_migration("0001_a.sql", text)


async def test_failed_migration_is_rolled_back_whole(conn: asyncpg.Connection, tmp_path: Path):
    source = write_migrations(
        tmp_path / "m",
        TWO_TABLES[0],
        ("broken", "CREATE TABLE b (id int);\nSELECT 1 / 0;", "DROP TABLE b;"),
    )
    with pytest.raises(MigrationError, match=r"0002_broken\.sql \(up\) failed.*DivisionByZero"):
        await migrate_up(conn, source=source)
    assert await conn.fetchval("SELECT to_regclass('a')") is not None
    assert await conn.fetchval("SELECT to_regclass('b')") is None
    assert await conn.fetchval("SELECT array_agg(version) FROM schema_migrations") == [1]


# -- the schema refuses bad rows ------------------------------------------------------------


async def insert(conn: asyncpg.Connection | asyncpg.Pool, table: str, **values: Any) -> None:
    columns = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    await conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({params})", *values.values())


def a_portfolio(**overrides: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "name": "main",
        "initial_capital": Decimal("100000"),
        "cash_balance": Decimal("100000"),
        "max_position_size": Decimal("10000"),
        "max_portfolio_risk": Decimal("0.02"),
        "max_positions": 10,
        "max_leverage": Decimal("1"),
        "max_order_notional": Decimal("10000"),
        "max_concentration": Decimal("0.25"),
        "daily_loss_limit": Decimal("2000"),
        "day_start_equity": Decimal("100000"),
    } | overrides


def an_order(portfolio_id: uuid.UUID, **overrides: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "portfolio_id": portfolio_id,
        "client_order_id": f"c-{uuid.uuid4()}",
        "symbol": "AAPL",
        "side": "buy",
        "order_type": "limit",
        "time_in_force": "day",
        "quantity": Decimal("100"),
        "limit_price": Decimal("150.50"),
    } | overrides


@pytest.fixture
async def portfolio_id(db_pool: asyncpg.Pool) -> uuid.UUID:
    portfolio = a_portfolio()
    await insert(db_pool, "portfolios", **portfolio)
    return portfolio["id"]


@pytest.mark.parametrize(
    ("overrides", "constraint"),
    [
        (
            {
                "filled_quantity": Decimal(101),
                "filled_notional": Decimal("15200.50"),
                "average_fill_price": Decimal("150.50"),
            },
            "orders_filled_within_quantity",
        ),
        ({"status": "done"}, "orders_status_known"),
        # Breaks two rules: PostgreSQL reports the first CHECK by name.
        ({"quantity": Decimal("-5")}, "orders_filled_within_quantity"),
        ({"quantity": Decimal("0")}, "orders_quantity_positive"),
        ({"limit_price": None}, "orders_prices_match_type"),
        ({"order_type": "market"}, "orders_prices_match_type"),  # market with a limit price
        ({"order_type": "stop_limit"}, "orders_prices_match_type"),  # no stop price
        ({"symbol": "aapl"}, "orders_symbol_check"),
        (
            {
                "status": "filled",
                "closed_at": datetime.now(UTC),
                "filled_quantity": Decimal(50),
                "filled_notional": Decimal("7525"),
                "average_fill_price": Decimal("150.50"),
            },
            "orders_filled_means_complete",
        ),
        ({"filled_quantity": Decimal("10")}, "orders_fill_totals_consistent"),  # no notional
        ({"status": "canceled"}, "orders_closed_at_iff_terminal"),
        ({"quantity": Decimal("1.0000000001")}, "share_quantity_exact"),  # would be rounded
        ({"limit_price": Decimal("NaN")}, "price_value_exact"),
        ({"limit_price": Decimal("Infinity")}, "price_value_exact"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_orders_refuse_rows_that_break_an_invariant(
    db_pool: asyncpg.Pool, portfolio_id: uuid.UUID, overrides: dict[str, Any], constraint: str
):
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await insert(db_pool, "orders", **an_order(portfolio_id, **overrides))
    assert refused.value.constraint_name == constraint
    assert await db_pool.fetchval("SELECT count(*) FROM orders") == 0


async def test_second_order_with_the_same_client_order_id_is_refused(
    db_pool: asyncpg.Pool, portfolio_id: uuid.UUID
):
    await insert(db_pool, "orders", **an_order(portfolio_id, client_order_id="abc"))
    with pytest.raises(asyncpg.UniqueViolationError) as refused:
        await insert(db_pool, "orders", **an_order(portfolio_id, client_order_id="abc"))
    assert refused.value.constraint_name == "orders_client_order_id_unique"
    other = a_portfolio()
    await insert(db_pool, "portfolios", **other)
    await insert(db_pool, "orders", **an_order(other["id"], client_order_id="abc"))  # fine


def an_execution(order: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    quantity, price = Decimal("0.000001"), Decimal("150.123456")
    return {
        "execution_id": f"x-{uuid.uuid4()}",
        "order_id": order["id"],
        "portfolio_id": order["portfolio_id"],
        "symbol": order["symbol"],
        "side": order["side"],
        "quantity": quantity,
        "price": price,
        "notional": quantity * price,
        "executed_at": datetime.now(UTC),
    } | overrides


async def test_execution_is_stored_once_per_execution_id(
    db_pool: asyncpg.Pool, portfolio_id: uuid.UUID
):
    order = an_order(portfolio_id)
    await insert(db_pool, "orders", **order)
    fill = an_execution(order, execution_id="exec-1")
    await insert(db_pool, "executions", **fill)
    with pytest.raises(asyncpg.UniqueViolationError) as refused:
        await insert(db_pool, "executions", **fill)
    assert refused.value.constraint_name == "executions_pkey"
    # Exact: an 18-digit notional comes back digit for digit.
    row = await db_pool.fetchrow("SELECT quantity, price, notional FROM executions")
    assert (str(row["quantity"]), str(row["price"]), str(row["notional"])) == (
        "0.000001",
        "150.123456",
        "0.000150123456",
    )


async def test_execution_must_match_its_order(db_pool: asyncpg.Pool, portfolio_id: uuid.UUID):
    order = an_order(portfolio_id)
    await insert(db_pool, "orders", **order)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await insert(db_pool, "executions", **an_execution(order, symbol="MSFT"))
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await insert(db_pool, "executions", **an_execution(order, notional=Decimal("0.00015")))
    assert refused.value.constraint_name == "executions_notional_exact"


async def test_failed_transaction_leaves_no_partial_write(db_pool: asyncpg.Pool):
    portfolio = a_portfolio()
    async with db_pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            async with conn.transaction():
                await insert(conn, "portfolios", **portfolio)
                await insert(conn, "orders", **an_order(portfolio["id"]))
                await insert(conn, "orders", **an_order(portfolio["id"], status="lost"))
    assert await db_pool.fetchval("SELECT count(*) FROM portfolios") == 0
    assert await db_pool.fetchval("SELECT count(*) FROM orders") == 0


@pytest.mark.parametrize(
    ("overrides", "constraint"),
    [
        ({"max_concentration": Decimal("1.5")}, "portfolios_max_concentration_check"),
        ({"max_positions": 0}, "portfolios_max_positions_check"),
        ({"trades_won": -1}, "portfolios_trades_won_check"),
        ({"trading_state": "paused"}, "portfolios_trading_state_check"),
        ({"cash_balance": Decimal("0.001") / 3}, "money_amount_exact"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_portfolios_refuse_rows_that_break_an_invariant(
    db_pool: asyncpg.Pool, overrides: dict[str, Any], constraint: str
):
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await insert(db_pool, "portfolios", **a_portfolio(**overrides))
    assert refused.value.constraint_name == constraint


async def test_closed_position_keeps_its_row_but_no_cost_basis(
    db_pool: asyncpg.Pool, portfolio_id: uuid.UUID
):
    closed = {"portfolio_id": portfolio_id, "symbol": "AAPL", "quantity": Decimal(0)}
    await insert(db_pool, "positions", **closed, realized_pnl=Decimal("12.34"))
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await insert(db_pool, "positions", **(closed | {"symbol": "MSFT"}), cost_basis=Decimal(1))
    assert refused.value.constraint_name == "positions_flat_has_no_basis"
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await insert(
            db_pool,
            "positions",
            portfolio_id=portfolio_id,
            symbol="TSLA",
            quantity=Decimal(-5),
            cost_basis=Decimal(500),
            average_entry_price=Decimal(100),
        )
    assert refused.value.constraint_name == "positions_basis_has_quantity_sign"
