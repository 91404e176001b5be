"""make test's scheduling over two xdist workers (tests.helpers.scheduling): files that share a costly session
fixture or the local Slurm cluster run on one worker; other files are units of their own."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

from xdist.scheduler import LoadScopeScheduling

from tests.helpers.paths import REPO
from tests.helpers.scheduling import (
    LONGEST_FIRST,
    SHARED_UNITS,
    SharedFixtureScheduling,
    start_order,
    unit_of,
)

PROBE = """
import os
from pathlib import Path

def test_{name}_{index}():
    with Path(os.environ["PROBE_LOG"]).open("a") as log:
        log.write("{name} " + os.environ["PYTEST_XDIST_WORKER"] + "\\n")
"""
CONFTEST = """
import pytest

@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from tests.helpers.scheduling import SharedFixtureScheduling
    return SharedFixtureScheduling(config, log)
"""


def test_every_shared_unit_names_existing_files() -> None:
    assert all((REPO / prefix).exists() for prefix in SHARED_UNITS)
    assert unit_of("tests/cluster/test_slurm.py::test_x") == unit_of(
        "tests/cluster/test_two_nodes.py::test_y"
    )
    assert unit_of("tests/data/test_tarstream.py::test_x[1]") == "tests/data/test_tarstream.py"


def test_the_longest_units_are_real_and_start_first() -> None:
    assert all(unit in SHARED_UNITS.values() or (REPO / unit).is_file() for unit in LONGEST_FIRST)
    nodeids = [
        "tests/data/test_tarstream.py::test_x",
        "tests/resilience/test_sigkill_campaign.py::test_y",
        "tests/cluster/test_time_limit.py::test_z",
        "tests/tracking/test_team_server.py::test_w",
    ]
    assert [n.split("/")[2] for n in sorted(nodeids, key=start_order)] == [
        "test_time_limit.py::test_z",  # local-slurm
        "test_sigkill_campaign.py::test_y",  # resilience-reference
        "test_team_server.py::test_w",
        "test_tarstream.py::test_x",
    ]


def test_xdist_still_has_the_scope_hook() -> None:
    """The hook this scheduler overrides, as pytest-xdist 3.8.0 defines it."""
    assert list(inspect.signature(LoadScopeScheduling._split_scope).parameters) == ["self", "nodeid"]
    assert SharedFixtureScheduling._split_scope is not LoadScopeScheduling._split_scope


def test_a_shared_unit_runs_on_one_worker_and_other_files_spread(tmp_path: Path) -> None:
    """A real two-worker session over probe files laid out like the resilience tests."""
    shared = [prefix for prefix in SHARED_UNITS if prefix.startswith("tests/resilience/")]
    folder = tmp_path / "tests" / "resilience"
    folder.mkdir(parents=True)
    for name in [*(Path(file).stem for file in shared), "test_alone_a", "test_alone_b"]:
        (folder / f"{name}.py").write_text("".join(PROBE.format(name=name, index=i) for i in range(4)))
    (tmp_path / "conftest.py").write_text(CONFTEST)
    log = tmp_path / "probe.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROBE_LOG": str(log)}
    command = [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", str(tmp_path)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    workers: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        name, worker = line.split()
        workers.setdefault(name, set()).add(worker)
    shared_workers = set().union(*(workers[Path(file).stem] for file in shared))
    assert len(shared_workers) == 1  # both files, all 8 tests, on one worker
    assert all(len(workers[name]) == 1 for name in ("test_alone_a", "test_alone_b"))  # a file is one unit
