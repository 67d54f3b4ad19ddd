"""`trading up` supervises (issue 13, item 4): in a temporary directory, SIGKILL of the
worker, of the API and of PostgreSQL each gets that part started again, with the reason
logged, while the stack keeps running; orders still fill afterwards; Ctrl-C then stops
everything with a "stopped" line and no traceback. credentials.json and the banner name
the metrics endpoints and the Temporal frontend."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from activities.store.postgres import free_port
from api.client import TradingClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 90.0


def until(what: str, check: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if result := check():
                return result
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.3)


class Up:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.out = data.parent / "up.out"
        ports = {name: free_port() for name in ("temporal", "ui", "api", "metrics")}
        self.env = {
            **os.environ,
            "DATA_DIR": str(data),
            "TEMPORAL_ADDRESS": f"127.0.0.1:{ports['temporal']}",
            "TEMPORAL_UI_PORT": str(ports["ui"]),
            "API_PORT": str(ports["api"]),
            "WORKER_METRICS_PORT": str(ports["metrics"]),
            "ORDER_POLL_INTERVAL_SECONDS": "2",
        }
        self.env.pop("DATABASE_URL", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> dict[str, Any]:
        with open(self.out, "ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "up"],
                cwd=ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        until("trading up is up", lambda: "trading is up" in self.text() or self._exited())
        return dict(json.loads((self.data / "credentials.json").read_text()))

    def _exited(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, self.text()[-4000:]
        return False

    def text(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def pids(self) -> dict[str, int]:
        return dict(json.loads((self.data / "stack.json").read_text()))

    def postmaster(self) -> int:
        return int((self.data / "pgdata" / "postmaster.pid").read_text().split()[0])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill_everything(self) -> None:
        with contextlib.suppress(Exception):
            for pid in [*self.pids().values(), self.postmaster()]:
                with contextlib.suppress(ProcessLookupError, TypeError):
                    os.kill(pid, signal.SIGKILL)
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def restarted(up: Up, name: str, old_pid: int) -> bool:
    pid = up.pids()[name]
    return pid != old_pid and Path(f"/proc/{pid}").exists()


def wait_filled(client: TradingClient, order_id: str) -> None:
    until(f"order {order_id} filled", lambda: client.get_order(order_id).status == "filled")


def test_trading_up_restarts_what_dies_and_stops_cleanly(tmp_path: Path) -> None:
    tmp_path.chmod(0o711)
    up = Up(tmp_path / "state")
    up.data.mkdir()
    try:
        credentials = up.start()
        metrics = credentials["metrics"]
        assert set(metrics) == {"api", "worker", "temporal"}
        assert metrics["api"] == credentials["api_url"] + "/metrics"
        assert metrics["worker"].endswith(f":{up.env['WORKER_METRICS_PORT']}/metrics")
        banner = up.text()
        assert credentials["temporal_address"] == up.env["TEMPORAL_ADDRESS"]
        for url in (*metrics.values(), up.env["TEMPORAL_ADDRESS"]):
            assert url in banner, banner
        assert httpx.get(metrics["temporal"], timeout=5).status_code == 200
        client = TradingClient.from_credentials(up.data / "credentials.json")
        wait_filled(client, client.place_order(symbol="AAPL", quantity="1", side="buy").id)

        worker = up.pids()["worker"]
        kill_group(worker)
        until("a new worker", lambda: restarted(up, "worker", worker))
        assert "worker killed by SIGKILL" in up.text()
        assert up.alive()
        wait_filled(client, client.place_order(symbol="KO", quantity="1", side="buy").id)

        api = up.pids()["api"]
        kill_group(api)
        until("a new API", lambda: restarted(up, "api", api))
        until("the API answers", lambda: client.get_portfolio())

        temporal = up.pids()["temporal"]
        kill_group(temporal)
        until("Temporal again", lambda: restarted(up, "temporal", temporal))
        assert "Temporal killed by SIGKILL" in up.text()
        wait_filled(client, client.place_order(symbol="INTC", quantity="1", side="buy").id)

        postmaster = up.postmaster()
        os.kill(postmaster, signal.SIGKILL)
        until("PostgreSQL again", lambda: up.postmaster() != postmaster)
        assert "PostgreSQL died" in up.text()
        until("the API reads again", lambda: client.get_portfolio())
        wait_filled(client, client.place_order(symbol="MSFT", quantity="1", side="buy").id)
        assert up.alive()

        assert up.process is not None
        up.process.send_signal(signal.SIGINT)
        assert up.process.wait(60) == 0
    finally:
        up.kill_everything()
    text = up.text()
    assert text.rstrip().endswith("stopped"), text[-2000:]
    assert "Traceback" not in text, text
    assert "pg_ctl stop failed" not in text, text
