"""Shared by the resilience tests: a tiny demo-shaped job, its loss curve from MLflow, its final weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from pipeline.checkpoints import LAST_NAME, load_checkpoint
from pipeline.tracking import keys
from tests.helpers.paths import REPO

STEPS_PER_EPOCH = 8
EPOCHS = 2
TOLERANCE = 1e-6  # CPU, fp32: the resumed job computes the same floats; anything looser hides a wrong batch


CHECKPOINT_EVERY = 2  # steps between periodic checkpoints in these jobs


def job_overrides(shards: Path, out: Path, uri: str, experiment: str, *, workers: int = 2) -> list[str]:
    """The demo profile shrunk to seconds: 2 epochs of 8 steps of 16 full-size crops, a 1/16-width net
    (dropout and PCA lighting on: their random draws must resume too), every step logged, a checkpoint every
    2 steps."""
    return [
        "profile=demo",
        f"data.root={shards}",
        "data.batch_size=16",
        f"data.num_workers={workers}",
        "data.shuffle_buffer=64",
        "model.width=0.0625",
        f"trainer.limit_train_batches={STEPS_PER_EPOCH}",
        "trainer.limit_val_batches=1",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.accelerator=cpu",
        "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        f"callbacks.periodic_checkpoint.every_n_train_steps={CHECKPOINT_EVERY}",
        "callbacks.conv1_figure=null",
        f"paths.output_dir={out}",
        f"logger.tracking_uri={uri}",
        f"logger.experiment_name={experiment}",
    ]


def loss_curve(uri: str, run_id: str) -> dict[int, float]:
    """train/loss by step; fails if a step was logged twice."""
    history = MlflowClient(uri).get_metric_history(run_id, keys.TRAIN_LOSS)
    steps = [metric.step for metric in history]
    assert len(steps) == len(set(steps)), f"steps logged twice: {sorted(steps)}"
    return {metric.step: metric.value for metric in history}


def assert_same_curve(resumed: dict[int, float], reference: dict[int, float], since: int = 0) -> None:
    expected = {step: value for step, value in reference.items() if step >= since}
    assert sorted(resumed) == sorted(reference), (sorted(resumed), sorted(reference))
    for step, value in expected.items():
        assert abs(resumed[step] - value) <= TOLERANCE, f"step {step}: {resumed[step]} vs {value}"


def final_weights(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(ckpt_dir / LAST_NAME)["state_dict"]


def assert_same_weights(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert left.keys() == right.keys()
    for key, value in left.items():
        torch.testing.assert_close(value, right[key], atol=TOLERANCE, rtol=0, msg=key)


def cli(args: list[str], cwd: Path, timeout: float = 400, **popen) -> subprocess.CompletedProcess:
    """``python -m pipeline.train ARGS`` in a fresh process that imports this worktree and the test faults."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "HYDRA_FULL_ERROR": "1",
    }
    command = [sys.executable, "-m", "pipeline.train", *args, f"hydra.run.dir={cwd / 'hydra'}"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **popen)
