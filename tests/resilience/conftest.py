"""Fixtures for the resilience tests (resume, checkpoints, damaged shards, tracking outages, failing jobs)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# the training tests' helpers (compose_train, shard_overrides, ...) and the faults injected into jobs
sys.path[:0] = [str(HERE.parent / "train"), str(HERE)]

# one thread per process and one sqlite store per session, as for the training tests
from shared_fixtures import mlflow_uri, one_thread_per_test_process  # noqa: E402, F401 (found by name)


@dataclass(frozen=True)
class Reference:
    """The uninterrupted job of ``resume_helpers.job_overrides``: its run, loss curve, final weights, and a
    copy of every checkpoint it wrote (``<global step>.ckpt``)."""

    uri: str
    run_id: str
    curve: dict[int, float]
    ckpt_dir: Path
    archive: Path


@pytest.fixture(scope="session")
def reference(demo_shards, tmp_path_factory) -> Reference:
    from resume_helpers import job_overrides, loss_curve
    from train_helpers import compose_train

    from pipeline.train import train

    root = tmp_path_factory.mktemp("reference")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    archive = [
        "+callbacks.archive._target_=faults.ArchiveCheckpoints",
        f"+callbacks.archive.ckpt_dir={root / 'out' / 'checkpoints'}",
        f"+callbacks.archive.archive={root / 'archive'}",
    ]
    result = train(compose_train(job_overrides(demo_shards, root / "out", uri, "reference") + archive))
    curve = loss_curve(uri, result["run_id"])
    return Reference(uri, result["run_id"], curve, root / "out" / "checkpoints", root / "archive")
