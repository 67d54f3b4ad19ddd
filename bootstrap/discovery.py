"""Finding the running stack: what a command line process has not been told in the
environment, it reads from the data directory `trading up` writes.

`trading up` writes `<DATA_DIR>/credentials.json`. Operator and client commands run in
another terminal, usually with nothing exported; `stack_settings()` builds their settings
from the environment first and, for each setting the environment leaves unset, takes the
value the running stack wrote (the Temporal address, namespace and UI URL, the database
URL). Keys read, first present wins (absent keys keep the setting's default):

    TEMPORAL_ADDRESS    temporal_address | temporal.address
    TEMPORAL_NAMESPACE  temporal_namespace | temporal.namespace
    TEMPORAL_UI_URL     temporal_ui_url | temporal_ui | temporal.ui
    DATABASE_URL        database_url

The file is only read, never written. `connect_temporal` and `open_pool` turn a connection
failure into `Unreachable`, one line naming the setting and where its value came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import asyncpg
    from temporalio.client import Client

    from bootstrap.settings import Settings

S = TypeVar("S", bound="Settings")

CREDENTIALS_FILE = "credentials.json"
CONNECT_TIMEOUT_SECONDS = 10.0

# setting -> where credentials.json may hold it (a key, or a path into a nested object)
STACK_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "temporal_address": (("temporal_address",), ("temporal", "address")),
    "temporal_namespace": (("temporal_namespace",), ("temporal", "namespace")),
    "temporal_ui_url": (("temporal_ui_url",), ("temporal_ui",), ("temporal", "ui")),
    "database_url": (("database_url",),),
}


class Unreachable(Exception):
    """A service the command needs did not answer; the message is one line naming the
    setting to check."""


@dataclass(frozen=True)
class StackFile:
    """What the data directory says about the running stack."""

    path: Path
    values: dict[str, str] = field(default_factory=dict)  # setting name -> value

    def origin(self, setting: str, environ: Mapping[str, str] | None = None) -> str:
        """Where a setting's value comes from, for error messages."""
        name = setting.upper()
        if _is_set(name, os.environ if environ is None else environ):
            return f"{name} from the environment"
        if setting in self.values:
            return f"{name} unset; read from {self.path}"
        return f"{name} unset; the default"


def _is_set(name: str, environ: Mapping[str, str]) -> bool:
    return any(key.upper() == name and value.strip() for key, value in environ.items())


def _lookup(data: Any, path: tuple[str, ...]) -> str | None:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data if isinstance(data, str) and data.strip() else None


def read_stack_file(data_dir: Path) -> StackFile:
    """The stack's settings from `<data_dir>/credentials.json`; empty when it is missing or
    unreadable (nothing runs there, or not yet)."""
    path = data_dir / CREDENTIALS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return StackFile(path)
    values: dict[str, str] = {}
    for setting, paths in STACK_KEYS.items():
        for key_path in paths:
            value = _lookup(data, key_path)
            if value is not None:
                values[setting] = value
                break
    return StackFile(path, values)


def stack_settings(cls: type[S], environ: Mapping[str, str] | None = None) -> tuple[S, StackFile]:
    """Settings from the environment, completed from the running stack's data directory
    for every setting the environment leaves unset."""
    environ = os.environ if environ is None else environ
    data_dir = cls().data_dir  # DATA_DIR, or .trading
    stack = read_stack_file(data_dir)
    overrides: dict[str, Any] = {
        k: v for k, v in stack.values.items() if not _is_set(k.upper(), environ)
    }
    return cls(**overrides), stack


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    # The Temporal SDK's connect error is a Rust debug dump; its OS message is the news.
    found = re.search(r'message: "([^"]+)"', text)
    if found:
        text = found.group(1).lower()
    return text if len(text) <= 160 else text[:157] + "..."


async def connect_temporal(
    settings: Settings, stack: StackFile, timeout: float = CONNECT_TIMEOUT_SECONDS
) -> Client:
    """The Temporal client every command uses, or Unreachable naming TEMPORAL_ADDRESS."""
    from temporalio.service import RPCError

    from bootstrap.settings import secret
    from bootstrap.temporal import connect

    # No search-attribute registration here: operators read and signal; the worker and the
    # stack register them.
    client = connect(
        settings.temporal_address,
        settings.temporal_namespace,
        tls=settings.temporal_tls,
        api_key=secret(settings.temporal_api_key),
    )
    try:
        return await asyncio.wait_for(client, timeout)
    except (RuntimeError, RPCError, OSError, TimeoutError) as err:
        reason = f"no answer within {timeout:g}s" if isinstance(err, TimeoutError) else _reason(err)
        raise Unreachable(
            f"cannot reach Temporal at {settings.temporal_address} "
            f"(namespace {settings.temporal_namespace}; {stack.origin('temporal_address')}): "
            f"{reason}"
        ) from None


def redacted(url: str) -> str:
    """host:port/database of a database URL, without user or password."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path}"


@contextlib.asynccontextmanager
async def open_pool(
    settings: Settings,
    stack: StackFile,
    *,
    migrate: bool = False,
    require_existing: bool = True,
    timeout: float = CONNECT_TIMEOUT_SECONDS,
) -> AsyncIterator[asyncpg.Pool]:
    """The pool on DATABASE_URL, or on the embedded server of the data directory, or
    Unreachable naming DATABASE_URL. With `require_existing`, an unset DATABASE_URL and no
    embedded cluster is refused instead of creating an empty one."""
    import asyncpg

    from activities.store.postgres import PostgresError
    from bootstrap.resources import open_database

    where = "the embedded server in " + str(settings.data_dir / "pgdata")
    if settings.database_url:
        where = redacted(settings.database_url)
    elif require_existing and not (settings.data_dir / "pgdata" / "PG_VERSION").exists():
        raise Unreachable(
            f"no database: DATABASE_URL is unset and {settings.data_dir / 'pgdata'} holds none; "
            "start the stack (make up) or set DATABASE_URL"
        )
    async with contextlib.AsyncExitStack() as exits:
        try:
            pool = await asyncio.wait_for(
                exits.enter_async_context(open_database(settings, migrate=migrate)), timeout
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, PostgresError) as err:
            reason = (
                f"no answer within {timeout:g}s" if isinstance(err, TimeoutError) else _reason(err)
            )
            raise Unreachable(
                f"cannot reach PostgreSQL at {where} ({stack.origin('database_url')}): {reason}"
            ) from None
        yield pool
