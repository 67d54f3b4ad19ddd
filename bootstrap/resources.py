"""Connections every entry point opens the same way: the PostgreSQL pool (migrated, on
DATABASE_URL or the embedded server) and the Temporal client (pydantic converter, our
search attributes registered).

The API's pool is a `BoundedPool`: every wait on PostgreSQL has a deadline (connect,
pool acquire, each statement, the release), and a failure that means "PostgreSQL is not
answering" (a timeout, a refused or reset connection, a server shutting down) leaves the
pool as one `DependencyUnavailable("postgres", ...)`, which the API answers with 503. A
connection whose statement timed out is dropped at once instead of waiting for the
server to acknowledge the cancel: a frozen server never would, and the request would
hang in the release.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Generator
from types import TracebackType
from typing import Any

import asyncpg
from temporalio.client import Client

from activities.store.migrations import migrate_up
from activities.store.postgres import create_pool, init_connection, resolve_database
from bootstrap.settings import Settings, secret
from bootstrap.temporal import connect, register_search_attributes

log = logging.getLogger(__name__)


class DependencyUnavailable(Exception):
    """A dependency (`postgres`, `temporal`) did not answer, or not in time. The request
    may succeed later; the API answers 503 with Retry-After."""

    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(f"{dependency} unavailable: {reason}")
        self.dependency = dependency
        self.reason = reason


def is_outage(error: BaseException) -> bool:
    """Whether `error` says PostgreSQL (or the network to it) is down or too slow, rather
    than that a statement was wrong: timeouts, socket errors, connection-class SQLSTATEs
    (08...), operator intervention (57...: shutdown, starting up, statement canceled), too
    many connections, and asyncpg's "connection is closed"."""
    if isinstance(error, DependencyUnavailable | TimeoutError | OSError):
        return True
    if isinstance(
        error,
        asyncpg.PostgresConnectionError
        | asyncpg.exceptions.OperatorInterventionError
        | asyncpg.TooManyConnectionsError,
    ):
        return True
    if isinstance(error, asyncpg.InterfaceError):
        text = str(error)
        return "closed" in text or "closing" in text
    return False


def describe(error: BaseException) -> str:
    """A short reason for a log line or a 503's details: no DSN, no password."""
    if isinstance(error, DependencyUnavailable):
        return error.reason
    if isinstance(error, TimeoutError):
        return "no answer in time"
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: {error.strerror}"
    if isinstance(error, asyncpg.PostgresError) and error.sqlstate:
        return f"{type(error).__name__} ({error.sqlstate})"
    return type(error).__name__


def _unavailable(error: BaseException, deadline: float) -> DependencyUnavailable:
    if isinstance(error, DependencyUnavailable):
        return error
    if isinstance(error, TimeoutError):
        return DependencyUnavailable("postgres", f"no answer within {deadline:g} s")
    return DependencyUnavailable("postgres", describe(error))


class BoundedPool(asyncpg.Pool):
    """An asyncpg pool whose acquire and release never wait longer than `deadline`, whose
    outage errors surface as `DependencyUnavailable`, and which drops (terminates) a
    connection that saw an outage error instead of resetting it. Statements are bounded by
    the pool's `command_timeout`; connecting by its `timeout`."""

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    def acquire(self, *, timeout: float | None = None) -> _BoundedAcquire:  # type: ignore[override]
        return _BoundedAcquire(self, self.deadline if timeout is None else timeout)

    async def _acquire_bounded(self, timeout: float) -> Any:
        try:
            return await self._acquire(timeout)  # type: ignore[attr-defined]
        except BaseException as error:
            if is_outage(error):
                raise _unavailable(error, timeout) from error
            raise

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        try:
            await super().release(connection, timeout=self.deadline if timeout is None else timeout)
        except BaseException as error:
            if is_outage(error):
                # asyncpg has terminated the connection already; it will reconnect.
                raise _unavailable(error, self.deadline) from error
            raise

    def drop(self, connection: Any) -> None:
        """Terminate a checked-out connection: its holder returns to the pool at once."""
        with contextlib.suppress(Exception):
            connection.terminate()


class _BoundedAcquire:
    """`async with pool.acquire() as conn` and `conn = await pool.acquire()`, bounded."""

    def __init__(self, pool: BoundedPool, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout
        self.connection: Any = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self.pool._acquire_bounded(self.timeout).__await__()

    async def __aenter__(self) -> Any:
        self.connection = await self.pool._acquire_bounded(self.timeout)
        return self.connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, self.connection = self.connection, None
        if exc is not None and is_outage(exc):
            self.pool.drop(connection)  # no reset: a frozen server would never answer it
            raise _unavailable(exc, self.pool.deadline) from exc
        await self.pool.release(connection)


async def create_bounded_pool(
    url: str, min_size: int, max_size: int, deadline: float, *, application_name: str
) -> BoundedPool:
    """A `BoundedPool` as `activities.store.postgres.create_pool` makes its pools (UTC,
    json codecs without floats), with `deadline` on connect, acquire, every statement and
    release. Its first connections are opened here: a server that is down fails now."""
    pool = BoundedPool(
        url,
        deadline=deadline,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        init=init_connection,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        command_timeout=deadline,
        timeout=deadline,
        server_settings={"timezone": "UTC", "application_name": application_name},
    )
    await pool
    return pool


class CollapseRepeats(logging.Filter):
    """Lets the first record of a message through, then one summary per `every` seconds
    with how many were held back. Tracebacks are cut to one line (`ErrorType: message`),
    except the first one when `first_traceback` (asyncpg logs a traceback each time it
    fails to refill its pool while the server is down)."""

    def __init__(self, every: float = 30.0, *, first_traceback: bool = False) -> None:
        super().__init__()
        self.every = every
        self.first_traceback = first_traceback
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}:{record.msg}"
        now = time.monotonic()
        last, held = self._seen.get(key, (float("-inf"), 0))
        if now - last < self.every:
            self._seen[key] = (last, held + 1)
            return False
        self._seen[key] = (now, 0)
        first = last == float("-inf")
        text = record.getMessage()
        if (
            record.exc_info
            and record.exc_info[1] is not None
            and not (first and self.first_traceback)
        ):
            error = record.exc_info[1]
            text = f"{text}: {type(error).__name__}: {error}"
            record.exc_info = None
            record.exc_text = None
        if held:
            text = f"{text} ({held} more like it in the last {now - last:.0f} s)"
        record.msg, record.args = text, None
        return True


_ASYNCPG_POOL_LOG = logging.getLogger("asyncpg.pool")


def collapse_asyncpg_pool_log() -> None:
    """Once per process: asyncpg's pool logs one traceback per failed refill attempt."""
    if not any(isinstance(f, CollapseRepeats) for f in _ASYNCPG_POOL_LOG.filters):
        _ASYNCPG_POOL_LOG.addFilter(CollapseRepeats())


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


@contextlib.asynccontextmanager
async def open_bounded_database(
    settings: Settings, deadline: float, *, migrate: bool = True, application_name: str
) -> AsyncIterator[BoundedPool]:
    """Like `open_database`, with a `BoundedPool` (every wait at most `deadline` seconds).
    Migrations run on a plain connection first: they may legitimately take longer."""
    collapse_asyncpg_pool_log()
    async with resolve_database(settings.database_url, settings.data_dir / "pgdata") as url:
        if migrate:
            conn = await asyncpg.connect(url, timeout=max(deadline, 10))
            try:
                await migrate_up(conn)
            finally:
                await conn.close()
        pool = await create_bounded_pool(
            url,
            settings.db_pool_min,
            settings.db_pool_max,
            deadline,
            application_name=application_name,
        )
        try:
            yield pool
        finally:
            try:
                await asyncio.wait_for(pool.close(), timeout=max(deadline, 5))
            except (TimeoutError, Exception):  # a frozen server: do not hang the shutdown
                pool.terminate()


async def temporal_client(settings: Settings) -> Client:
    client = await connect(
        settings.temporal_address,
        settings.temporal_namespace,
        tls=settings.temporal_tls,
        api_key=secret(settings.temporal_api_key),
    )
    await register_search_attributes(client)
    return client
