"""Slurm's time-limit signal (SIGUSR1) handled at a step boundary: the job writes last.ckpt and stops, the
run stays RUNNING (Lightning's own handler marked it FINISHED while training went on), and the job started
again (what ``scontrol requeue`` does) continues the same run to FINISHED with every step logged once.
A signal that comes before training starts (the job is still setting up) stops it at its first step.
Outside Slurm, so no requeue is asked for: the test starts the second job itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.checkpoints.files import LAST_NAME
from pipeline.tracking import keys
from tests.helpers.concurrent_jobs import TINY_JOB
from tests.helpers.paths import REPO
from tests.helpers.training import runs_of, steps_of

STEPS = 6
SIGNAL_AT = 2


def _job(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "pipeline.train", *TINY_JOB,
        f"data.train_samples={16 * STEPS}", f"trainer.limit_train_batches={STEPS}",
        f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "logger.experiment_name=usr1",
        f"paths.output_dir={tmp_path}", f"hydra.run.dir={tmp_path}", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


# (the callback sending SIGUSR1, its arguments, the step the job stops after)
SIGNALLERS = {
    "during training": ("SignalAtStep", (f"+callbacks.usr1.step={SIGNAL_AT}",), SIGNAL_AT),
    "before training": ("SignalAtSetup", (), 1),
}


@pytest.mark.slow
@pytest.mark.parametrize("when", list(SIGNALLERS))
def test_sigusr1_keeps_the_run_running_and_the_next_job_continues_it(tmp_path: Path, when: str) -> None:
    callback, arguments, stop_step = SIGNALLERS[when]
    stopped = _job(
        tmp_path,
        f"+callbacks.usr1._target_=tests.helpers.faults.{callback}",
        *arguments,
        "+callbacks.usr1.signal_name=SIGUSR1",
    )
    log = stopped.stdout + stopped.stderr
    assert f"SIGUSR1 (time limit near): stopping after step {stop_step}" in log, log[-3000:]
    assert (tmp_path / "checkpoints" / LAST_NAME).is_file()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = runs_of(client, "usr1")
    assert run.info.status == "RUNNING"
    # the signalled step's metrics may wait in the journal: the next job sends them first
    assert steps_of(client, run.info.run_id, keys.TRAIN_LOSS) in (
        list(range(n)) for n in (stop_step, stop_step + 1)
    )

    continued = _job(tmp_path)
    assert continued.returncode == 0, continued.stderr[-3000:]
    (run,) = runs_of(client, "usr1")
    assert run.info.status == "FINISHED"
    assert steps_of(client, run.info.run_id, keys.TRAIN_LOSS) == list(range(STEPS))
