"""The repository's service scripts (scripts/local_slurm.sh, scripts/tracking_server.sh) for tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def start_service(
    script: Path, directory: Path, env: dict[str, str], timeout_s: float
) -> subprocess.CompletedProcess:
    """``bash SCRIPT start DIRECTORY``, no stdin, output captured: the caller asserts on the return code and
    stops the service with ``SCRIPT stop DIRECTORY`` whatever happened."""
    return subprocess.run(
        ["bash", str(script), "start", str(directory)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
