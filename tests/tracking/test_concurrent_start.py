"""Any number of jobs can start at once on one sqlite store: 4 processes started together on a fresh store,
then 4 more on the now existing one; every job runs and ends FINISHED, with MLflow's source tags."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking import keys
from tests.helpers.concurrent_jobs import TINY_STEPS, run_together
from tests.helpers.training import runs_of, steps_of

JOBS = 4


@pytest.mark.slow
def test_jobs_started_together_on_fresh_then_existing_sqlite_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for wave in ("fresh", "existing"):
        finished = run_together(tmp_path / wave, JOBS, uri, "together")
        for job in finished:
            assert job.returncode == 0, job.log[-3000:]
    client = MlflowClient(uri)
    runs = runs_of(client, "together")
    assert len(runs) == 2 * JOBS
    assert {run.info.status for run in runs} == {"FINISHED"}
    for run in runs:
        assert steps_of(client, run.info.run_id, keys.TRAIN_LOSS) == list(range(TINY_STEPS))
        tags = run.data.tags
        assert tags[keys.TAG_MLFLOW_SOURCE_NAME] == keys.SOURCE_NAME_TRAIN
        assert tags[keys.TAG_MLFLOW_GIT_COMMIT] == tags[keys.TAG_GIT_COMMIT]
        assert tags[keys.TAG_MLFLOW_USER]
    assert (tmp_path / "mlflow.db.lock").is_file()
