"""How ``make test`` spreads the suite over pytest-xdist workers: a test file is one unit of work (its
module-scoped fixtures are built once), and the files that share a costly session fixture or a machine-wide
service form one unit together, on one worker.

pytest-xdist's own ``--dist loadgroup`` finds its groups by rewriting each item's node id in the workers,
which pytest 9.2 no longer allows (node ids are computed), so its ``xdist_group`` marks are silently ignored.
This scheduler groups by path instead, in the controller, where only node ids are known. It extends xdist's
``LoadScopeScheduling`` through ``_split_scope``, the method xdist's own ``LoadGroupScheduling`` overrides:
checked against pytest-xdist 3.8.0; ``tests/layout/test_scheduling.py`` fails if that hook changes.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

# path prefix -> unit of work shared by every test under it
SHARED_UNITS = {
    # the local Slurm clusters (scripts/local_slurm.sh): one set of daemons on this host at a time
    "tests/cluster/test_slurm.py": "local-slurm",
    "tests/cluster/test_two_nodes.py": "local-slurm",
    "tests/cluster/test_time_limit.py": "local-slurm",
    # the uninterrupted reference job (tests/resilience/conftest.py::reference), trained once
    "tests/resilience/test_exact_resume.py": "resilience-reference",
    "tests/resilience/test_sigkill_campaign.py": "resilience-reference",
}


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its shared unit, else its file."""
    path = nodeid.split("::", 1)[0]
    return next((unit for prefix, unit in SHARED_UNITS.items() if path.startswith(prefix)), path)


class SharedFixtureScheduling(LoadScopeScheduling):
    """xdist's load-by-scope scheduling with ``unit_of`` as the scope."""

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)
