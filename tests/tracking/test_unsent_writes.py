"""Tracking data is never lost silently: the sqlite store is locked by another process a few steps into a
run (every write fails with "database is locked") until the job has ended. The job exits 75 naming the
journal and the replay command; once the store takes writes again, the replay sends every step once and
ends the run FINISHED; replaying the same journal again sends nothing twice."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking import keys
from pipeline.tracking.journal import JOURNAL_NAME
from pipeline.tracking.replay import EXIT_TRACKING_UNSENT, replay
from tests.helpers.concurrent_jobs import TINY_JOB
from tests.helpers.paths import REPO
from tests.helpers.training import runs_of, steps_of

STEPS = 8
LOCK_AFTER_STEP = 2


def _replay(ckpt_dir: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pipeline.tracking.replay", f"ckpt_dir={ckpt_dir}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _steps_done(clock: Path) -> int:
    return len(clock.read_text().splitlines()) if clock.is_file() else 0


@pytest.mark.slow
def test_unwritable_store_exits_75_and_replay_sends_each_step_once(tmp_path: Path) -> None:
    db, out = tmp_path / "mlflow.db", tmp_path / "job"
    clock, ckpt_dir = out / "clock.txt", out / "checkpoints"
    command = [
        sys.executable, "-m", "pipeline.train", *TINY_JOB,
        f"data.train_samples={16 * STEPS}", f"trainer.limit_train_batches={STEPS}",
        f"logger.tracking_uri=sqlite:///{db}", "logger.experiment_name=unsent",
        "logger.flush_timeout_s=2", "logger.stop_flush_timeout_s=2",
        "+callbacks.clock._target_=tests.helpers.faults.StepClock", f"+callbacks.clock.path={clock}",
        "+callbacks.clock.sleep_s=0.5", f"paths.output_dir={out}", f"hydra.run.dir={out}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out.mkdir()
    with (out / "job.log").open("w") as log:
        job = subprocess.Popen(command, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while _steps_done(clock) < LOCK_AFTER_STEP and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    holder = sqlite3.connect(db, timeout=60, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the store: every write of the job fails
    try:
        returncode = job.wait(timeout=240)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    text = (out / "job.log").read_text()
    assert returncode == EXIT_TRACKING_UNSENT, text[-3000:]
    assert str(ckpt_dir / JOURNAL_NAME) in text
    assert f"python -m pipeline.tracking.replay ckpt_dir={ckpt_dir}" in text

    client = MlflowClient(f"sqlite:///{db}")
    (run,) = runs_of(client, "unsent")
    assert run.info.status == "RUNNING"  # the final status is among the undelivered writes
    assert len(steps_of(client, run.info.run_id, keys.TRAIN_LOSS)) < STEPS
    journal_copy = tmp_path / "journal-copy.jsonl"
    shutil.copy(ckpt_dir / JOURNAL_NAME, journal_copy)

    summary = _replay(ckpt_dir)
    assert "status FINISHED" in summary
    assert not (ckpt_dir / JOURNAL_NAME).exists()
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    assert keys.TAG_TRACKING_UNSENT not in run.data.tags
    assert steps_of(client, run.info.run_id, keys.TRAIN_LOSS) == list(range(STEPS))

    assert "nothing to replay" in replay(ckpt_dir)
    shutil.copy(journal_copy, ckpt_dir / JOURNAL_NAME)  # the same journal once more: nothing sent twice
    assert "sent 0 metrics" in replay(ckpt_dir)
    assert steps_of(client, run.info.run_id, keys.TRAIN_LOSS) == list(range(STEPS))
