"""`trading` as a process: importing the worker, the API or the command line loads no
pandas (only the NYSE calendar and Alpaca need it), and a command that cannot reach the
stack prints one line on stderr, no log lines and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "exchange_calendars", "alpaca.trading")


@pytest.mark.parametrize(
    "code",
    [
        "import worker.cli; worker.cli.build_parser()",
        "import worker.main",
        "import api.app, api.server",
        "import worker.stack",
    ],
)
def test_starting_loads_no_pandas(code: str):
    check = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_a_command_without_a_stack_is_one_line_on_stderr(tmp_path: Path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS", "DATA_DIR")
    }
    env["PYTHONPATH"] = str(ROOT)
    for argv in (["orders", "stuck"], ["portfolios", "list"], ["migrate", "status"]):
        done = subprocess.run(
            [sys.executable, "-m", "worker.cli", *argv],
            cwd=tmp_path,
            env={**env, "DATABASE_URL": "postgresql://u:p@127.0.0.1:9/none"},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 1 and done.stdout == "", argv
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("trading: cannot reach PostgreSQL at 127.0.0.1:9/none")
        assert "DATABASE_URL from the environment" in done.stderr
