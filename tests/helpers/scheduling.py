"""How ``make test`` spreads the suite over pytest-xdist workers: a test file is one unit of work (its
module-scoped fixtures are built once), and the files that share a costly session fixture or a machine-wide
service form one unit together, on one worker.

pytest-xdist's own ``--dist loadgroup`` finds its groups by rewriting each item's node id in the workers,
which pytest 9.2 no longer allows (node ids are computed), so its ``xdist_group`` marks are silently ignored.
This scheduler groups by path instead, in the controller, where only node ids are known. It extends xdist's
``LoadScopeScheduling`` through ``_split_scope``, the method xdist's own ``LoadGroupScheduling`` overrides:
checked against pytest-xdist 3.8.0; ``tests/layout/test_scheduling.py`` fails if that hook changes.

Units are handed out in collection order (``make test`` passes ``--no-loadscope-reorder``; xdist's default
puts the units with the most tests first), and the collection starts with the units that take minutes,
longest first: a worker that draws a long unit last would run on alone while the other idles.
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


# the units that take minutes, longest first (fresh-clone `make test` on 2 cores, 2026-12-07; the container's
# image build makes its test a long one on a fresh machine)
LONGEST_FIRST = (
    "local-slurm",  # ~6 min with the cluster's start
    "resilience-reference",  # ~6 min: the 25-trial SIGKILL campaign
    "tests/cluster/test_container.py",  # 1 min, ~5 min when podman builds the image
    "tests/prep/test_scale_rehearsal.py",
    "tests/tracking/test_team_server.py",
    "tests/tracking/test_concurrent_start.py",
    "tests/train/test_train_demo.py",
    "tests/compare/test_compare_paired.py",
    "tests/gpu_check/test_gpu_check.py",
    "tests/resilience/test_tracking_outage.py",
)


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its shared unit, else its file."""
    path = nodeid.split("::", 1)[0]
    return next((unit for prefix, unit in SHARED_UNITS.items() if path.startswith(prefix)), path)


class SharedFixtureScheduling(LoadScopeScheduling):
    """xdist's load-by-scope scheduling with ``unit_of`` as the scope."""

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)


def start_order(nodeid: str) -> int:
    """Where a test's unit starts: the long units first, in ``LONGEST_FIRST``'s order, then the rest."""
    unit = unit_of(nodeid)
    return LONGEST_FIRST.index(unit) if unit in LONGEST_FIRST else len(LONGEST_FIRST)
