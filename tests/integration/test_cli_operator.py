"""Operator commands find the running stack in the data directory `trading up` writes, and
a service that does not answer is one line naming its setting, never a traceback. Real
PostgreSQL and the time-skipping Temporal server; the commands run as `trading` runs them
(worker.cli.main, in a thread: each runs its own event loop)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment

from activities.store.postgres import free_port
from bootstrap.discovery import read_stack_file, stack_settings
from bootstrap.settings import Settings
from worker.cli import main

pytestmark = pytest.mark.integration

STACK_VARIABLES = ("DATA_DIR", "DATABASE_URL", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory as `trading up` leaves it, and nothing exported: the commands must
    find everything in it."""
    for name in (*STACK_VARIABLES, "TEMPORAL_UI_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / ".trading"
    directory.mkdir()
    return directory


def write_stack(data_dir: Path, **values: object) -> Path:
    path = data_dir / "credentials.json"
    path.write_text(json.dumps({"api_url": "http://127.0.0.1:1", **values}))
    return path


async def trading(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def target(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


def test_the_stack_file_fills_only_what_the_environment_leaves_unset(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    write_stack(
        data_dir,
        temporal={"address": "127.0.0.1:17233", "namespace": "stack"},
        temporal_ui="http://127.0.0.1:18233",
        database_url="postgresql://u:p@127.0.0.1:15432/trading",
    )
    settings, stack = stack_settings(Settings)
    assert (settings.temporal_address, settings.temporal_namespace) == ("127.0.0.1:17233", "stack")
    assert settings.temporal_ui_url == "http://127.0.0.1:18233"
    assert settings.database_url == "postgresql://u:p@127.0.0.1:15432/trading"
    assert (
        stack.origin("temporal_address")
        == "TEMPORAL_ADDRESS unset; read from .trading/credentials.json"
    )

    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal.internal:7233")
    settings, stack = stack_settings(Settings)
    assert settings.temporal_address == "temporal.internal:7233"  # the environment wins
    assert settings.temporal_namespace == "stack"
    assert stack.origin("temporal_address") == "TEMPORAL_ADDRESS from the environment"


def test_a_missing_or_broken_stack_file_leaves_the_defaults(data_dir: Path):
    assert read_stack_file(data_dir).values == {}
    (data_dir / "credentials.json").write_text("{not json")
    settings, stack = stack_settings(Settings)
    assert settings.temporal_address == "127.0.0.1:7233"
    assert stack.origin("temporal_address") == "TEMPORAL_ADDRESS unset; the default"


async def test_operator_commands_reach_temporal_and_postgresql_named_in_the_data_directory(
    data_dir: Path,
    pg_database_url: str,
    temporal_env: WorkflowEnvironment,
    capsys: pytest.CaptureFixture[str],
):
    write_stack(data_dir, database_url=pg_database_url, temporal_address=target(temporal_env))
    unknown = uuid4()

    status, out, err = await trading(capsys, "orders", "reconcile", str(unknown))
    # Temporal answered (no such workflow) and PostgreSQL too (no such order).
    assert (status, err.strip()) == (1, f"order {unknown} has no running workflow (no such order)")

    status, out, err = await trading(capsys, "orders", "stuck", "--json")
    assert status == 0 and isinstance(json.loads(out), list), err
    status, out, err = await trading(capsys, "reconciliation", "show", "--json")
    assert status == 0 and isinstance(json.loads(out), list), err
    status, out, err = await trading(capsys, "migrate", "status", "--json")
    migrations = json.loads(out)
    assert status == 0 and migrations[0]["version"] == 1 and migrations[0]["checksum_ok"] is True


async def test_an_unreachable_temporal_is_one_line_naming_the_setting_and_its_source(
    data_dir: Path, pg_database_url: str, capsys: pytest.CaptureFixture[str]
):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    write_stack(data_dir, database_url=pg_database_url, temporal_address=address)

    status, out, err = await trading(capsys, "orders", "reconcile", str(uuid4()))

    assert status == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"trading: cannot reach Temporal at {address} ")
    assert "TEMPORAL_ADDRESS unset; read from .trading/credentials.json" in err


async def test_an_unreachable_database_is_one_line_naming_database_url(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:secret@127.0.0.1:{free_port()}/x")
    status, _, err = await trading(capsys, "orders", "stuck")
    assert status == 1 and err.count("\n") == 1
    assert "cannot reach PostgreSQL at 127.0.0.1:" in err
    assert "DATABASE_URL from the environment" in err and "secret" not in err

    monkeypatch.delenv("DATABASE_URL")  # and no embedded cluster in the data directory
    status, _, err = await trading(capsys, "portfolios", "list")
    assert status == 1 and err.count("\n") == 1
    assert err.startswith("trading: no database: DATABASE_URL is unset")


async def test_portfolios_create_and_list(
    data_dir: Path,
    pg_database_url: str,
    db_pool: asyncpg.Pool,
    capsys: pytest.CaptureFixture[str],
):
    write_stack(data_dir, database_url=pg_database_url)
    status, out, err = await trading(
        capsys,
        "portfolios", "create", "--name", "swing", "--capital", "50,000",
        "--max-positions", "5", "--max-order-notional", "7500", "--json",
    )  # fmt: skip
    assert status == 0, err
    created = json.loads(out)
    assert created["name"] == "swing" and Decimal(created["initial_capital"]) == Decimal("50000")
    assert created["limits"]["max_positions"] == 5
    assert Decimal(created["limits"]["max_order_notional"]) == Decimal("7500")
    row = await db_pool.fetchrow(
        "SELECT name, cash_balance FROM portfolios WHERE id = $1", UUID(created["id"])
    )
    assert row is not None and (row["name"], row["cash_balance"]) == ("swing", Decimal("50000"))

    status, out, _ = await trading(capsys, "portfolios", "list")
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "NAME", "STATE", "CAPITAL", "CASH", "POSITIONS"]
    (line,) = [r for r in rows if r.startswith(created["id"])]
    assert line.split()[1:] == ["swing", "active", "$50,000.00", "$50,000.00", "0"]
    assert header.index("CASH") + len("CASH") == line.rindex("$50,000.00") + len("$50,000.00")

    status, out, _ = await trading(capsys, "portfolios", "list", "--json")
    assert created["id"] in [p["id"] for p in json.loads(out)]


async def test_portfolios_create_refuses_bad_input_and_writes_nothing(
    data_dir: Path,
    pg_database_url: str,
    db_pool: asyncpg.Pool,
    capsys: pytest.CaptureFixture[str],
):
    write_stack(data_dir, database_url=pg_database_url)
    before = await db_pool.fetchval("SELECT count(*) FROM portfolios")

    status, _, err = await trading(
        capsys,
        "portfolios",
        "create",
        "--name",
        "x",
        "--capital",
        "1000",
        "--max-concentration",
        "2",
    )
    assert status == 1 and err.startswith("error: ") and "max_concentration" in err
    status, _, err = await trading(capsys, "portfolios", "create", "--name", "x", "--capital", "-5")
    assert status == 1 and "initial_capital" in err
    with pytest.raises(SystemExit):
        await trading(capsys, "portfolios", "create", "--name", "x", "--capital", "lots")

    assert await db_pool.fetchval("SELECT count(*) FROM portfolios") == before
