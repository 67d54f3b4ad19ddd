"""Versioned SQL migrations: apply, revert and report them, safely from several processes.

A migration is one file `NNNN_name.sql` in `activities/migrations/` (loaded through
importlib.resources, so an installed package finds them) holding both directions:

    -- migrate:up
    CREATE TABLE ...;
    -- migrate:down
    DROP TABLE ...;

Rules, checked before anything runs:
* versions are 1, 2, 3, ... with no gap and no duplicate;
* the applied versions in `schema_migrations` are exactly the first N files: an applied
  version with no file (a database newer than this code) or a pending file below the
  highest applied version (a gap) is refused;
* the sha256 of every applied file (line endings normalised) still matches: an edited,
  already-applied migration is refused, naming the file. Add a new migration instead.

Each migration runs in its own transaction together with its `schema_migrations` row,
so a failure leaves the database at the previous version. A whole run holds a
session-level `pg_advisory_lock(MIGRATION_LOCK_KEY)`: a second process running at the
same time waits, then finds nothing left to apply. (Advisory locks are per database.)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import NamedTuple

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

# "trading" in ASCII; any constant works as long as every migrating process uses it.
MIGRATION_LOCK_KEY = 0x74_72_61_64_69_6E_67

_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_MARKER = re.compile(r"^--\s*migrate:(up|down)\s*$", re.MULTILINE)

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY CHECK (version > 0),
    name       text NOT NULL,
    checksum   text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

Source = Traversable | Path
Connection = asyncpg.Connection | PoolConnectionProxy
Executor = Connection | asyncpg.Pool  # a pool lends one connection for the whole run


class MigrationError(RuntimeError):
    """The migrations on disk and the database disagree, or a migration failed."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    filename: str
    up: str
    down: str
    checksum: str  # sha256 hex of the whole file, LF line endings


class MigrationStatus(NamedTuple):
    version: int
    name: str
    applied: bool
    applied_at: datetime | None
    checksum_ok: bool | None  # None when not applied (nothing to compare)


@dataclass(frozen=True)
class _Applied:
    version: int
    name: str
    checksum: str
    applied_at: datetime


def default_source() -> Source:
    """The package's migrations folder, read through importlib.resources."""
    try:
        return importlib.resources.files("activities.store") / "migrations"
    except (TypeError, NotADirectoryError):
        # An editable install made while activities/ had no __init__.py maps it as a
        # namespace package, which importlib.resources cannot read on Python 3.11.
        return Path(__file__).with_name("migrations")


def parse_migration(filename: str, text: str) -> Migration:
    match = _FILENAME.match(filename)
    if match is None:
        raise MigrationError(f"{filename}: migration files are named NNNN_lower_snake.sql")
    text = text.replace("\r\n", "\n")
    parts = _MARKER.split(text)
    # parts = [preamble, "up", up_sql, "down", down_sql]
    if len(parts) != 5 or parts[1] != "up" or parts[3] != "down":
        raise MigrationError(
            f"{filename}: needs exactly one '-- migrate:up' followed by one '-- migrate:down'"
        )
    preamble = [line for line in parts[0].splitlines() if line.strip()]
    if any(not line.lstrip().startswith("--") for line in preamble):
        raise MigrationError(f"{filename}: only comments may precede '-- migrate:up'")
    if not parts[2].strip():
        raise MigrationError(f"{filename}: the up part is empty")
    return Migration(
        version=int(match.group(1)),
        name=match.group(2),
        filename=filename,
        up=parts[2],
        down=parts[4],
        checksum=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def load_migrations(source: Source | None = None) -> list[Migration]:
    """Every migration in `source` (default: the package's migrations), in version order."""
    folder = default_source() if source is None else source
    migrations = sorted(
        (
            parse_migration(entry.name, entry.read_text(encoding="utf-8"))
            for entry in folder.iterdir()
            if entry.name.endswith(".sql") and entry.is_file()
        ),
        key=lambda m: m.version,
    )
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"{migration.filename}: expected version {expected:04d} "
                "(versions are consecutive from 0001, without duplicates)"
            )
    return migrations


# -- the three operations ---------------------------------------------------------------------


async def migrate_up(
    db: Executor, target: int | None = None, *, source: Source | None = None
) -> list[Migration]:
    """Apply the pending migrations up to `target` (default: all); returns those applied."""
    migrations = load_migrations(source)
    async with _locked(db) as conn:
        await conn.execute(_CREATE_TABLE)
        applied = _verify(migrations, await _read_applied(conn))
        current = len(applied)
        goal = len(migrations) if target is None else target
        if not 0 <= goal <= len(migrations):
            raise MigrationError(f"target {goal} is not a known version (0..{len(migrations)})")
        if goal < current:
            raise MigrationError(
                f"the database is at version {current}, above the target {goal}: "
                "use migrate_down to go back"
            )
        done = []
        for migration in migrations[current:goal]:
            await _apply(conn, migration, up=True)
            done.append(migration)
        return done


async def migrate_down(
    db: Executor, steps: int = 1, *, source: Source | None = None
) -> list[Migration]:
    """Revert the last `steps` applied migrations, newest first; returns those reverted."""
    if steps < 0:
        raise ValueError(f"steps must not be negative, got {steps}")
    migrations = load_migrations(source)
    async with _locked(db) as conn:
        if not await _table_exists(conn):
            return []
        applied = _verify(migrations, await _read_applied(conn))
        done = []
        for migration in reversed(migrations[max(len(applied) - steps, 0) : len(applied)]):
            await _apply(conn, migration, up=False)
            done.append(migration)
        return done


async def status(db: Executor, *, source: Source | None = None) -> list[MigrationStatus]:
    """Every known migration, and every applied version without a file, in version order.

    Reports instead of refusing: an edited file shows `checksum_ok=False`, an applied
    version with no file shows with `checksum_ok=False` and the name it was applied under.
    """
    migrations = load_migrations(source)
    async with _connection(db) as conn:
        applied = (
            {a.version: a for a in await _read_applied(conn)} if await _table_exists(conn) else {}
        )
    rows = []
    for migration in migrations:
        row = applied.pop(migration.version, None)
        rows.append(
            MigrationStatus(
                version=migration.version,
                name=migration.name,
                applied=row is not None,
                applied_at=row.applied_at if row else None,
                checksum_ok=None if row is None else row.checksum == migration.checksum,
            )
        )
    rows.extend(
        MigrationStatus(a.version, a.name, True, a.applied_at, False) for a in applied.values()
    )
    return sorted(rows, key=lambda r: r.version)


# -- internals --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _connection(db: Executor) -> AsyncIterator[Connection]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


@contextlib.asynccontextmanager
async def _locked(db: Executor) -> AsyncIterator[Connection]:
    async with _connection(db) as conn:
        if conn.is_in_transaction():
            raise MigrationError("run migrations outside a transaction: each one opens its own")
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY):
            log.info("another process is migrating this database; waiting for it")
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            yield conn
        finally:
            if not conn.is_closed():
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def _table_exists(conn: Connection) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"))


async def _read_applied(conn: Connection) -> list[_Applied]:
    rows = await conn.fetch(
        "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
    )
    return [_Applied(**dict(row)) for row in rows]


def _verify(migrations: list[Migration], applied: list[_Applied]) -> list[_Applied]:
    by_version = {m.version: m for m in migrations}
    for row in applied:
        if row.version not in by_version:
            raise MigrationError(
                f"the database has migration {row.version:04d} ({row.name}) applied, but no "
                "such file exists: the database is newer than this code"
            )
    for position, row in enumerate(applied, start=1):
        if row.version != position:
            raise MigrationError(
                f"migration {position:04d} ({by_version[position].filename}) is not applied "
                f"but {row.version:04d} is: a gap in the applied versions; refusing to guess"
            )
    for row in applied:
        migration = by_version[row.version]
        if row.checksum != migration.checksum:
            raise MigrationError(
                f"{migration.filename} was edited after it was applied (sha256 "
                f"{migration.checksum[:12]}... on disk, {row.checksum[:12]}... applied on "
                f"{row.applied_at:%Y-%m-%d %H:%M}); restore it and add a new migration instead"
            )
    return applied


async def _apply(conn: Connection, migration: Migration, *, up: bool) -> None:
    direction = "up" if up else "down"
    began = time.perf_counter()
    try:
        async with conn.transaction():
            await conn.execute(migration.up if up else migration.down)
            if up:
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            else:
                await conn.execute(
                    "DELETE FROM schema_migrations WHERE version = $1", migration.version
                )
    except asyncpg.PostgresError as error:
        raise MigrationError(
            f"{migration.filename} ({direction}) failed and was rolled back: "
            f"{type(error).__name__}: {error}"
        ) from error
    log.info(
        "migrated %s %s in %.0f ms",
        direction,
        migration.filename,
        (time.perf_counter() - began) * 1000,
    )
