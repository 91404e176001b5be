"""Helpers for the compare tests: one study of real, tiny trainings on the demo shards.

The study is made the way a user makes one: a real Hydra multirun in a subprocess
(`python -m pipeline.train -m profile=demo +experiment=baseline,no_lrn seed=1,2`), whose `study` tag is the
sweep folder's name; every job ends with its final 10-crop eval on the whole val split. Beside it, in the same
MLflow experiment: a no_lrn run of the same study whose training crashes (a crop larger than the images, so
Lightning raises inside fit and the run ends FAILED) and a no_dropout run of another study.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from pipeline.tracking import keys

EXPERIMENT_NAME = "compare-test"
STUDY = "sweep-2x2"
OTHER_STUDY = "other-study"
SWEEP_TIMEOUT_S = 900


@dataclass(frozen=True)
class TrainedStudy:
    tracking_uri: str
    experiment_name: str
    study: str
    root: Path

    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def runs(self) -> dict[str, object]:
        """Training runs by run name (report runs left out)."""
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment_name)
        return {
            run.info.run_name: run
            for run in client.search_runs([experiment.experiment_id])
            if run.data.tags.get(keys.TAG_KIND) != keys.KIND_REPORT
        }


def tiny_overrides(shards: Path, tracking_uri: str) -> list[str]:
    """2 epochs x 4 steps, a 1/16-width net; the whole val split (359 images), so errors vary by seed."""
    return [
        "profile=demo",
        f"data.root={shards}",
        "data.batch_size=16",
        "data.val_batch_size=64",
        "data.num_workers=0",
        "data.shuffle_buffer=64",
        "model.width=0.0625",
        "model.init_std=0.04",  # 0.01 / sqrt(width): with the paper's 0.01 a net this narrow stays at chance
        "optim.lr=0.03",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
        "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        f"logger.tracking_uri={tracking_uri}",
        f"logger.experiment_name={EXPERIMENT_NAME}",
    ]


def run_sweep(root: Path, shards: Path, tracking_uri: str) -> None:
    command = [
        sys.executable, "-m", "pipeline.train", "-m", "+experiment=baseline,no_lrn", "seed=1,2",
        *tiny_overrides(shards, tracking_uri), f"hydra.sweep.dir={root / 'multirun' / STUDY}",
    ]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"the sweep failed ({done.returncode}):\n{done.stderr[-4000:]}")
