"""Fixtures for the resilience tests (resume, checkpoints, damaged shards, tracking outages, failing jobs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.resume import job_overrides, loss_curve
from tests.helpers.training import compose_train


@pytest.fixture(scope="session", autouse=True)
def _one_thread(one_thread_per_test_process: None) -> None:
    """One thread per process, as for the training tests (tests.helpers.fixtures)."""


@dataclass(frozen=True)
class Reference:
    """The uninterrupted job of ``tests.helpers.resume.job_overrides``: its run, loss curve, final weights,
    and a copy of every checkpoint it wrote (``<global step>.ckpt``)."""

    uri: str
    run_id: str
    curve: dict[int, float]
    ckpt_dir: Path
    archive: Path


@pytest.fixture(scope="session")
def reference(demo_shards, tmp_path_factory) -> Reference:
    from pipeline.train import train

    root = tmp_path_factory.mktemp("reference")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    archive = [
        "+callbacks.archive._target_=tests.helpers.faults.ArchiveCheckpoints",
        f"+callbacks.archive.ckpt_dir={root / 'out' / 'checkpoints'}",
        f"+callbacks.archive.archive={root / 'archive'}",
    ]
    result = train(compose_train(job_overrides(demo_shards, root / "out", uri, "reference") + archive))
    curve = loss_curve(uri, result["run_id"])
    return Reference(uri, result["run_id"], curve, root / "out" / "checkpoints", root / "archive")
