"""A Hydra multirun from the command line: one MLflow run per job, all tagged with the sweep's study."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers.training import runs_of, train_cli


@pytest.mark.slow
def test_a_sweep_lands_one_run_per_job_under_one_study(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    train_cli(
        tmp_path,
        "-m",
        "data=synthetic",
        "data.train_samples=32",
        "data.val_samples=16",
        "data.batch_size=16",
        "model.width=0.0625",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "logger.experiment_name=sweep",
        f"logger.tracking_uri={uri}",
        f"hydra.sweep.dir={tmp_path / 'multirun' / 'my-sweep'}",
        "+experiment=baseline,no_lrn",
        "seed=1,2",
        timeout_s=400,
    )

    runs = runs_of(MlflowClient(uri), "sweep")
    assert sorted(run.info.run_name for run in runs) == [
        "baseline-seed1",
        "baseline-seed2",
        "no_lrn-seed1",
        "no_lrn-seed2",
    ]
    assert {run.data.tags["study"] for run in runs} == {"my-sweep"}
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert len({run.data.tags["ckpt_dir"] for run in runs}) == 4  # every job its own directory
