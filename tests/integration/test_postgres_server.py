"""The embedded PostgreSQL server, `resolve_database`, and the pool's type mapping."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from activities.store.postgres import (
    SYSTEM_USER,
    LocalPostgres,
    PostgresError,
    create_pool,
    database_url,
    process_alive,
    resolve_database,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def base_dir() -> Iterator[Path]:
    # Not tmp_path: pytest makes its directories 0700, which the server's user (when we
    # run as root) could not enter.
    base = Path(tempfile.mkdtemp(prefix="trading-pg-test-"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


async def test_embedded_server_keeps_data_across_a_restart(base_dir: Path):
    data_dir = base_dir / "pgdata"
    async with resolve_database(None, data_dir) as url:
        with pytest.raises(asyncpg.InvalidPasswordError):  # loopback is shared: no trust
            await asyncpg.connect(url.replace(urlsplit(url).password or "?", "wrong"))
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE TABLE kept (amount numeric)")
            await conn.execute("INSERT INTO kept VALUES (0.000000001)")
            settings = await conn.fetchrow(
                "SELECT current_setting('listen_addresses') AS listen,"
                " current_setting('unix_socket_directories') AS sockets"
            )
        finally:
            await conn.close()
    assert (settings["listen"], settings["sockets"]) == ("127.0.0.1", "")
    assert not (data_dir / "postmaster.pid").exists()  # stopped
    assert stat.S_IMODE((data_dir / "postgres.password").stat().st_mode) == 0o600
    # PostgreSQL refuses to run as root: as root, the server runs as (and owns) a system user.
    me = os.geteuid()
    assert data_dir.stat().st_uid == (pwd.getpwnam(SYSTEM_USER).pw_uid if me == 0 else me)

    async with LocalPostgres(data_dir, durable=False) as server:
        conn = await asyncpg.connect(server.url)
        try:
            assert await conn.fetchval("SELECT amount FROM kept") == Decimal("0.000000001")
        finally:
            await conn.close()


async def test_second_start_on_the_same_data_dir_reuses_the_running_server(base_dir: Path):
    async with LocalPostgres(base_dir / "pgdata", durable=False) as first:
        second = LocalPostgres(base_dir / "pgdata")
        await second.start()
        assert (second.port, second.started_here) == (first.port, False)
        await second.stop()  # leaves the server it did not start running
        conn = await asyncpg.connect(first.url)
        await conn.close()
        wrong_port = LocalPostgres(base_dir / "pgdata", port=first.port + 1)
        with pytest.raises(PostgresError, match="already runs"):
            await wrong_port.start()
    assert not (base_dir / "pgdata" / "postmaster.pid").exists()


async def test_start_after_the_server_was_killed_recovers_the_data(base_dir: Path):
    server = LocalPostgres(base_dir / "pgdata")  # durable: the commit survives the kill
    await server.start()
    conn = await asyncpg.connect(server.url)
    await conn.execute("CREATE TABLE kept AS SELECT 42 AS answer")
    await conn.close()
    postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGKILL)
    while process_alive(postmaster):  # the kill is asynchronous
        await asyncio.sleep(0.01)
    # Its postmaster.pid stays behind, naming a dead (maybe zombie, never reaped) process.
    async with LocalPostgres(base_dir / "pgdata") as restarted:
        assert restarted.started_here
        conn = await asyncpg.connect(restarted.url)
        try:
            assert await conn.fetchval("SELECT answer FROM kept") == 42
        finally:
            await conn.close()


async def test_a_directory_that_is_not_a_cluster_is_refused(base_dir: Path):
    (base_dir / "pgdata").mkdir()
    (base_dir / "pgdata" / "notes.txt").write_text("mine")
    with pytest.raises(PostgresError, match="neither empty nor a PostgreSQL data directory"):
        await LocalPostgres(base_dir / "pgdata").start()
    assert (base_dir / "pgdata" / "notes.txt").read_text() == "mine"


async def test_with_database_url_set_no_server_is_started(tmp_path: Path):
    given = "postgresql://someone@127.0.0.1:1/elsewhere"
    async with resolve_database(given, tmp_path / "pgdata") as url:
        assert url == given
    assert not (tmp_path / "pgdata").exists()


def test_database_url_comes_from_the_environment():
    assert database_url({}) is None
    assert database_url({"DATABASE_URL": "  "}) is None
    assert database_url({"DATABASE_URL": "postgresql+asyncpg://u@h/db"}) == "postgresql://u@h/db"
    assert database_url({"DATABASE_URL": "postgres://u@h/db"}) == "postgres://u@h/db"


async def test_pool_maps_numeric_to_decimal_and_timestamps_to_aware_datetimes(
    pg_database_url: str,
):
    pool = await create_pool(pg_database_url, min_size=1, max_size=1)
    try:
        row = await pool.fetchrow(
            "SELECT 12345678901.123456789::numeric AS amount, now() AS at,"
            " $1::jsonb AS doc, current_setting('timezone') AS tz",
            {"price": Decimal("150.1234"), "at": datetime(2026, 1, 15, tzinfo=UTC)},
        )
        doc = await pool.fetchval("""SELECT '{"p": 0.1, "n": 3}'::jsonb""")
    finally:
        await pool.close()
    assert row["amount"] == Decimal("12345678901.123456789")
    assert isinstance(row["at"], datetime) and row["at"].utcoffset() is not None
    assert row["tz"] == "UTC"
    assert row["doc"] == {"price": "150.1234", "at": "2026-01-15T00:00:00+00:00"}
    assert doc == {"p": Decimal("0.1"), "n": 3}
    assert isinstance(doc["p"], Decimal)
