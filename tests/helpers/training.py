"""Helpers for the training tests: compose conf/train.yaml as the CLI does, run the CLI, tiny settings, store
queries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from pipeline.tracking import keys
from tests.helpers.paths import CONF_DIR, REPO

# Every metric a one-epoch training logs into its run (keys.py's names, never retyped here).
METRIC_KEYS = {
    keys.TRAIN_LOSS,
    keys.TRAIN_TOP1,
    keys.TRAIN_EPOCH_TOP1,
    keys.VAL_LOSS,
    keys.VAL_TOP1,
    keys.VAL_TOP5,
    keys.LEARNING_RATE,
    keys.IMAGES_PER_S,
    keys.EPOCH,
}
# Deterministic in-memory data: no augmentation, fixed order, dropout off; 64 samples in global batches of 16
# (4 steps an epoch; under DDP, 2 ranks x 8 against 1 process x 16).
SYNTHETIC = (
    "data=synthetic",
    "data.train_samples=64",
    "data.val_samples=16",
    "data.batch_size=16",
    "model.width=0.0625",
    "model.dropout=0.0",
)


def compose_train(overrides: list[str]) -> DictConfig:
    """The config `python -m pipeline.train OVERRIDES` would run (minus Hydra's own runtime node)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def train_cli(cwd: Path, *overrides: str, timeout_s: float) -> None:
    """Runs ``python -m pipeline.train OVERRIDES`` in a fresh process (one thread); fails on a non-zero exit.

    A process of its own where the test needs the real entry point: Hydra's run directory, DDP ranks, sweeps.
    """
    command = [sys.executable, "-m", "pipeline.train", *overrides]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stderr[-3000:]


def shard_overrides(shards: Path, out_dir: Path, uri: str, experiment: str) -> list[str]:
    """A few steps of a tiny net on real shards (full 227 crops from the 256-px images, width 1/16)."""
    return [
        f"data.root={shards}",
        "data.batch_size=16",
        "data.num_workers=0",
        "data.shuffle_buffer=64",
        "model.width=0.0625",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "callbacks.final_eval.limit_batches=2",  # the final 10-crop eval: 2 batches, not 359 images
    ] + _quiet_one_epoch(out_dir, uri, experiment)


def synthetic_overrides(out_dir: Path, uri: str, experiment: str) -> list[str]:
    """``SYNTHETIC`` for one epoch, logged every step."""
    return [*SYNTHETIC, *_quiet_one_epoch(out_dir, uri, experiment)]


def runs_of(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def steps_of(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(metric.step for metric in client.get_metric_history(run_id, key))


def _quiet_one_epoch(out_dir: Path, uri: str, experiment: str) -> list[str]:
    """One CPU epoch, logged every step into ``experiment`` at ``uri``; no sanity check, no progress bar."""
    return [
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        f"paths.output_dir={out_dir}",
        f"logger.tracking_uri={uri}",
        f"logger.experiment_name={experiment}",
    ]
