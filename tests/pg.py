"""PostgreSQL for tests: one server per session, a migrated database, clean data per test.

The server is the embedded one in a throwaway data directory (fsync off), or, when
`DATABASE_URL` is set, that server: the tests then create (and drop) their own databases
with random names on it, so its user needs CREATEDB. Import the fixtures into a
conftest.py: `from tests.pg import pg_server_url, pg_database_url, pg_pool, db_pool, ...`.
Import them in one conftest only (the one highest up that needs them): each conftest that
imports a session fixture gets its own copy, and so its own server.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from graphlib import TopologicalSorter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from activities.migrations import Connection, migrate_up
from activities.postgres import LocalPostgres, create_pool, database_url

# -- helpers, usable without pytest -----------------------------------------------------------


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server (query string kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def random_database_name(prefix: str = "trading_test") -> str:
    return f"{prefix}_{secrets.token_hex(5)}"


async def create_database(server_url: str, name: str, template: str | None = None) -> str:
    """Create database `name` (optionally cloned from `template`); returns its URL."""
    conn = await asyncpg.connect(server_url)
    try:
        clone = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{clone}')
    finally:
        await conn.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def start_throwaway_server() -> LocalPostgres:
    """An embedded server in a new temporary data directory; `stop_throwaway_server` it."""
    base = Path(tempfile.mkdtemp(prefix="trading-pg-"))
    base.chmod(0o711)  # as root, the server's own user must reach the data directory
    server = LocalPostgres(base / "pgdata", database="postgres", durable=False)
    try:
        await server.start()
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    return server


async def stop_throwaway_server(server: LocalPostgres) -> None:
    try:
        await server.stop()
    finally:
        shutil.rmtree(server.data_dir.parent, ignore_errors=True)


async def tables_in_delete_order(conn: Connection) -> list[str]:
    """Every table of the current schema but schema_migrations, children before parents."""
    rows = await conn.fetch(
        """
        SELECT c.relname AS table_name,
               coalesce(array_agg(DISTINCT p.relname)
                        FILTER (WHERE p.relname IS NOT NULL AND p.oid <> c.oid), '{}') AS parents
        FROM pg_class c
        LEFT JOIN pg_constraint fk ON fk.conrelid = c.oid AND fk.contype = 'f'
        LEFT JOIN pg_class p ON p.oid = fk.confrelid
        WHERE c.relnamespace = current_schema()::regnamespace
          AND c.relkind = 'r' AND c.relname <> 'schema_migrations'
        GROUP BY c.relname
        """
    )
    graph = {row["table_name"]: set(row["parents"]) for row in rows}
    return list(reversed(list(TopologicalSorter(graph).static_order())))


async def delete_all_rows(pool: asyncpg.Pool, tables: list[str]) -> None:
    """Empty `tables` (in that order). DELETE, not TRUNCATE: 0.5 ms against 11 ms for
    the dozen nearly empty tables a test leaves behind."""
    await pool.execute(";".join(f'DELETE FROM "{table}"' for table in tables))


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def pg_server_url() -> AsyncIterator[str]:
    """URL of a maintenance database on the session's server (may CREATE DATABASE)."""
    url = database_url()
    if url is not None:
        yield url
        return
    server = await start_throwaway_server()
    try:
        yield server.url
    finally:
        await stop_throwaway_server(server)


@pytest.fixture(scope="session")
async def pg_database_url(pg_server_url: str) -> AsyncIterator[str]:
    """URL of a database created for this session and migrated to the latest version."""
    name = random_database_name()
    url = await create_database(pg_server_url, name)
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate_up(conn)
        finally:
            await conn.close()
        yield url
    finally:
        await drop_database(pg_server_url, name)


@pytest.fixture(scope="session")
async def pg_pool(pg_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The session's pool on the migrated database; data is shared between tests."""
    pool = await create_pool(pg_database_url, min_size=2, max_size=20)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
async def _pg_tables(pg_pool: asyncpg.Pool) -> list[str]:
    async with pg_pool.acquire() as conn:
        return await tables_in_delete_order(conn)


@pytest.fixture
async def db_pool(pg_pool: asyncpg.Pool, _pg_tables: list[str]) -> asyncpg.Pool:
    """The session's pool on the migrated database, every table emptied before the test."""
    await delete_all_rows(pg_pool, _pg_tables)
    return pg_pool


@pytest.fixture
async def empty_database_url(pg_server_url: str) -> AsyncIterator[str]:
    """URL of a new database with no tables at all (for migration tests); dropped after."""
    name = random_database_name("trading_empty")
    url = await create_database(pg_server_url, name)
    try:
        yield url
    finally:
        await drop_database(pg_server_url, name)
