"""Several ``python -m pipeline.train`` processes started at the same moment against one tracking store."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.paths import REPO
from tests.helpers.training import SYNTHETIC

# A few steps of a tiny net: what is tested is the store, not the training.
TINY_STEPS = 3
TINY_JOB = (
    *SYNTHETIC,
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    f"trainer.limit_train_batches={TINY_STEPS}",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "callbacks.final_eval.enabled=false",
    "callbacks.conv1_figure=null",
    "logger.system_metrics_interval_s=0",
)


@dataclass(frozen=True)
class Finished:
    returncode: int
    log: str


def run_together(
    root: Path, count: int, uri: str, experiment: str, extra: tuple[str, ...] = (), timeout_s: float = 300
) -> list[Finished]:
    """Starts ``count`` tiny jobs at once (job i in ``root/job{i}``, seed i), waits for all of them."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    jobs = []
    for index in range(count):
        out = root / f"job{index}"
        out.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pipeline.train", *TINY_JOB, *extra, f"seed={index}",
            f"logger.tracking_uri={uri}", f"logger.experiment_name={experiment}",
            f"paths.output_dir={out}", f"hydra.run.dir={out}",
        ]  # fmt: skip
        log = (out / "job.log").open("w")
        jobs.append((subprocess.Popen(command, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT), out))
    finished = []
    for process, out in jobs:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        finished.append(Finished(process.returncode, (out / "job.log").read_text()))
    return finished
