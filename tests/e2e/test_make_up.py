"""`make up` as a newcomer runs it: the operator commands find the running stack (its
PostgreSQL and its Temporal, on ports that are not the defaults) with nothing exported but
the data directory, and Ctrl-C (SIGINT to the terminal's process group) reaches the
stack: make returns and nothing of the stack is left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from activities.store.postgres import free_port, process_alive

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STAMP = ".venv/.installed-stamp"  # the Makefile's install stamp: never reinstall in a test


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_make_up_is_found_by_operator_commands_and_stops_on_ctrl_c(tmp_path: Path):
    data = tmp_path / "data"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")},
        "DATA_DIR": str(data),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "TEMPORAL_UI_PORT": str(free_port()),
        "API_PORT": str(free_port()),
        "WORKER_METRICS_PORT": str(free_port()),
    }
    output = tmp_path / "make.out"
    with open(output, "wb") as out:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "-o", STAMP, "up"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal gives it
        )
    try:
        wait_for(
            lambda: "Ctrl-C stops everything" in output.read_text() or make.poll() is not None,
            120,
            "make up did not come up",
        )
        assert make.poll() is None, output.read_text()[-3000:]
        pids = json.loads((data / "stack.json").read_text())

        # An operator in another terminal: only DATA_DIR says where the stack is.
        operator_env = {k: v for k, v in env.items() if k != "TEMPORAL_ADDRESS"}
        listed = subprocess.run(
            [sys.executable, "-m", "worker.cli", "portfolios", "list", "--json"],
            cwd=tmp_path,
            env={**operator_env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
        )
        assert listed.returncode == 0 and listed.stderr == "", listed.stderr
        credentials = json.loads((data / "credentials.json").read_text())
        assert [p["id"] for p in json.loads(listed.stdout)] == [credentials["portfolio_id"]]
        unknown = "00000000-0000-4000-8000-000000000001"
        reconcile = subprocess.run(
            [sys.executable, "-m", "worker.cli", "orders", "reconcile", unknown],
            cwd=tmp_path,
            env={**operator_env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
        )  # Temporal found at the stack's address (not the default), and it answers
        assert reconcile.stderr == f"order {unknown} has no running workflow (no such order)\n"

        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C
        make.wait(timeout=60)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()

    lines = [line for line in output.read_text().splitlines() if line.strip()]
    # The stack's last word is "stopped"; make may add its own "Interrupt" line after it.
    assert "stopped" in lines[-2:], lines[-3:]
    left = {name: pid for name, pid in pids.items() if pid and process_alive(pid)}
    assert left == {}, f"still running after Ctrl-C: {left}"
    assert not (data / "pgdata" / "postmaster.pid").exists()
