"""Connections every entry point opens the same way: the PostgreSQL pool (migrated, on
DATABASE_URL or the embedded server) and the Temporal client (pydantic converter, our
search attributes registered)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
from temporalio.client import Client

from activities.store.migrations import migrate_up
from activities.store.postgres import create_pool, resolve_database
from bootstrap.settings import Settings, secret
from bootstrap.temporal import connect, register_search_attributes


@contextlib.asynccontextmanager
async def open_database(settings: Settings, *, migrate: bool = True) -> AsyncIterator[asyncpg.Pool]:
    """The pool on DATABASE_URL, or on the embedded server under the data dir."""
    async with resolve_database(settings.database_url, settings.data_dir / "pgdata") as url:
        pool = await create_pool(url, settings.db_pool_min, settings.db_pool_max)
        try:
            if migrate:
                async with pool.acquire() as conn:
                    await migrate_up(conn)
            yield pool
        finally:
            await pool.close()


async def temporal_client(settings: Settings) -> Client:
    client = await connect(
        settings.temporal_address,
        settings.temporal_namespace,
        tls=settings.temporal_tls,
        api_key=secret(settings.temporal_api_key),
    )
    await register_search_attributes(client)
    return client
