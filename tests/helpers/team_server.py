"""The project's team tracking server (scripts/tracking_server.sh: ``mlflow server`` on PostgreSQL) for the
tests: started once in a folder PostgreSQL's own user can reach, stopped and removed at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.mlflow_server import free_port
from tests.helpers.paths import SCRIPTS
from tests.helpers.services import start_service

SCRIPT = SCRIPTS / "tracking_server.sh"
START_TIMEOUT_S = 300  # includes apt-get install postgresql on a fresh CI machine


@dataclass(frozen=True)
class TeamServer:
    directory: Path
    url: str
    env: dict[str, str]

    def restart_postgresql(self) -> None:
        """PostgreSQL stopped (fast: every connection cut) and started again, the server left running."""
        pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
        log = str(self.directory / "postgresql.log")  # a log file: else the new server holds our pipes open
        command = [
            str(pg_ctl),
            "-D",
            str(self.directory / "pgdata"),
            "-l",
            log,
            "-m",
            "fast",
            "-w",
            "restart",
        ]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


def _skip_reason() -> str | None:
    have_postgres = any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not have_postgres and (os.geteuid() != 0 or not shutil.which("apt-get")):
        return "PostgreSQL is not installed and cannot be (needs root and apt-get)"
    return None


@contextmanager
def team_server(host: str = "127.0.0.1") -> Iterator[TeamServer]:
    """The server on ``host`` (beyond 127.0.0.1 the script turns on basic auth: DIR/credentials)."""
    if reason := _skip_reason():
        pytest.skip(reason)
    # not under pytest's tmp folder (mode 700): as root the cluster runs as the postgres user
    root = Path(tempfile.mkdtemp(prefix="alexnet-team-server-", dir="/tmp"))
    root.chmod(0o755)
    directory = root / "server"
    env = {
        **os.environ,
        "CI": os.environ.get("CI", "true"),
        "PYTHON": sys.executable,
        "TRACKING_SERVER_PORT": str(free_port()),
        "TRACKING_SERVER_WORKERS": "2",
        "TRACKING_SERVER_HOST": host,
    }
    started = start_service(SCRIPT, directory, env, START_TIMEOUT_S)
    try:
        assert started.returncode == 0, f"tracking_server.sh start failed:\n{started.stderr[-3000:]}"
        yield TeamServer(directory, started.stdout.strip().splitlines()[-1], env)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(directory)], env=env, timeout=120, check=False)
        shutil.rmtree(root, ignore_errors=True)
