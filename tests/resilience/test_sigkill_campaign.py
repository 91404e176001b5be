"""Hard kills (SIGKILL, node loss, OOM) at random moments, each followed by a resume: one MLflow run,
FINISHED, every step logged once, and the loss curve of the uninterrupted job (recomputed steps included).

25 trials in bounded time (slow; a 5-trial sample in the quick suite):

- real kills: one ``python -m pipeline.train`` job (2 loader workers, a checkpoint every 2 steps) SIGKILLed
  again and again, each time in the same command's next attempt: the first kill lands while a checkpoint is
  being written (the test watches for its temporary file), the others at random times; the last attempt runs
  to the end. The workers of a killed job must go too.
- simulated kills: what a kill at a random moment leaves behind, rebuilt from the reference job's own
  checkpoints (``conftest.reference`` archives every one it wrote) and metrics: the checkpoints written
  before that moment, a half-written one when the moment falls in a write (as a temporary file: atomic
  writes; or as a truncated last.ckpt: a filesystem that lost the data of a rename), the metrics that had
  reached MLflow, and in half the trials a lagging outbox: the rest of the logged metrics only in its journal.
  A resume from there runs in-process.

A kill costs at most ``CHECKPOINT_EVERY`` steps here; with the defaults, 15 minutes of training (paper
profile) or 10 steps (demo profile): see docs/resilience.md.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from pipeline.checkpoints import load_checkpoint
from pipeline.tracking import keys
from pipeline.tracking.journal import JOURNAL_NAME, MetricJournal
from pipeline.tracking.store import get_or_create_experiment
from pipeline.train import train
from tests.helpers.paths import REPO
from tests.helpers.resume import CHECKPOINT_EVERY, assert_same_curve, job_overrides, loss_curve
from tests.helpers.training import compose_train, runs_of


@dataclass(frozen=True)
class Moment:
    step: int  # training steps done when the kill lands (their metrics all logged: step - 1 is the last)
    writing: str | None  # None, "atomic" (a temporary file left) or "torn" (last.ckpt itself cut short)
    sent_up_to: int  # metrics of steps <= this reached MLflow; the rest were in the outbox (and its journal)
    journal_from: int | None  # the journal holds steps > this (None: no journal, all sent)


def _moments(rng: random.Random, archive: list[int], count: int) -> list[Moment]:
    moments = []
    for index in range(count):
        writing = (None, "atomic", "torn")[index % 3]
        if writing is None:
            step = rng.randrange(1, max(archive))
        else:  # a checkpoint that has one before it
            step = rng.choice([s for s in archive if s > 0 and any(p < s for p in archive)])
        if index % 2:  # the outbox lagged: some steps only in the journal (which may still hold sent ones)
            sent = rng.randint(-1, step - 1)
            moments.append(Moment(step, writing, sent, rng.randint(-1, sent)))
        else:
            moments.append(Moment(step, writing, step - 1, None))
    return moments


def _leave_behind(moment: Moment, archive: Path, ckpt_dir: Path, rng: random.Random) -> None:
    """The checkpoint directory a kill at ``moment`` leaves (mtimes in write order)."""
    written = sorted(int(p.stem) for p in archive.glob("*.ckpt"))
    done = [s for s in written if s < moment.step or (s == moment.step and moment.writing is None)]
    ckpt_dir.mkdir(parents=True)
    files = []
    if len(done) >= 2:
        files.append(("last.ckpt.prev", (archive / f"{done[-2]:05d}.ckpt").read_bytes()))
    if done:
        files.append(("last.ckpt", (archive / f"{done[-1]:05d}.ckpt").read_bytes()))
    if moment.writing:
        data = (archive / f"{moment.step:05d}.ckpt").read_bytes()
        cut = data[: rng.randrange(len(data))]
        if moment.writing == "atomic":
            files.append((".last.ckpt.tmp-4242", cut))
        else:
            files = [(name, body) for name, body in files if name != "last.ckpt.prev"]
            files = [
                ("last.ckpt.prev", body) if name == "last.ckpt" else (name, body) for name, body in files
            ]
            files.append(("last.ckpt", cut))
    for order, (name, body) in enumerate(files):
        (ckpt_dir / name).write_bytes(body)
        os.utime(ckpt_dir / name, (1_000_000 + order, 1_000_000 + order))


def _killed_run(client: MlflowClient, reference, experiment: str, moment: Moment, ckpt_dir: Path) -> str:
    """A RUNNING run tagged with ckpt_dir that holds the reference's metrics up to ``moment.sent_up_to``, and
    the journal of the ones logged after ``moment.journal_from`` up to the kill."""
    source = MlflowClient(reference.uri)
    experiment_id = get_or_create_experiment(client, experiment)
    run_id = client.create_run(experiment_id, tags={keys.TAG_CKPT_DIR: str(ckpt_dir.resolve())}).info.run_id
    logged = [
        Metric(m.key, m.value, m.timestamp, m.step)
        for key in source.get_run(reference.run_id).data.metrics
        for m in source.get_metric_history(reference.run_id, key)
        if m.step < moment.step
    ]
    sent = [metric for metric in logged if metric.step <= moment.sent_up_to]
    for start in range(0, len(sent), 1000):
        client.log_batch(run_id, metrics=sent[start : start + 1000])
    if moment.journal_from is not None:
        journal = MetricJournal(ckpt_dir / JOURNAL_NAME, run_id)
        journal.append(sorted((m for m in logged if m.step > moment.journal_from), key=lambda m: m.step))
    return run_id


def _simulated_trials(demo_shards, tmp_path, mlflow_uri, reference, count: int, seed: int) -> None:
    rng = random.Random(seed)
    archive = sorted(int(p.stem) for p in reference.archive.glob("*.ckpt"))
    client = MlflowClient(mlflow_uri)
    for index, moment in enumerate(_moments(rng, archive, count)):
        trial = tmp_path / f"trial{index}"
        _leave_behind(moment, reference.archive, trial / "checkpoints", rng)
        run_id = _killed_run(client, reference, "sigkill_simulated", moment, trial / "checkpoints")
        overrides = job_overrides(demo_shards, trial, mlflow_uri, "sigkill_simulated")
        result = train(compose_train([*overrides, f"resume_run_id={run_id}"]))
        assert result["run_id"] == run_id
        assert client.get_run(run_id).info.status == "FINISHED", moment
        assert_same_curve(loss_curve(mlflow_uri, run_id), reference.curve)


def _wait_group_gone(pgid: int, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError(f"processes of the killed job (group {pgid}) outlived it by {within} s")


def _attempt(overrides: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pipeline.train", *overrides, f"hydra.run.dir={cwd / 'hydra'}"]
    log = (cwd / "attempts.log").open("a")
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=log, start_new_session=True)


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _kill(job: subprocess.Popen, ckpt_dir: Path, in_a_write: bool, rng: random.Random) -> str:
    """SIGKILLs the job while a checkpoint is being written (``in_a_write``; if none is caught in its first
    3 writes, or else) at a random moment up to 0.8 s after it wrote a checkpoint. Returns what it hit."""
    seen, writes, deadline, hit = _mtime(ckpt_dir / "last.ckpt"), 0, None, "a random moment"
    while job.poll() is None:
        if in_a_write and any(ckpt_dir.glob(".last.ckpt.tmp-*")):
            hit = "a checkpoint write"
            break
        if (mtime := _mtime(ckpt_dir / "last.ckpt")) != seen:
            seen, writes = mtime, writes + 1
        if deadline is None and writes >= (3 if in_a_write else 1):
            deadline = time.monotonic() + rng.uniform(0.05, 0.8)
        if deadline is not None and time.monotonic() > deadline:
            break
        time.sleep(0.001)
    assert job.poll() is None, "the job ended before it was killed"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    _wait_group_gone(job.pid)
    return hit


def _real_kills(demo_shards, tmp_path, mlflow_uri, reference, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    overrides = job_overrides(demo_shards, tmp_path / "job", mlflow_uri, "sigkill_real")
    ckpt_dir = tmp_path / "job" / "checkpoints"
    tmp_path.mkdir(parents=True)
    lost = []
    for attempt in range(kills):
        before = (
            load_checkpoint(ckpt_dir / "last.ckpt")["global_step"] if _mtime(ckpt_dir / "last.ckpt") else 0
        )
        hit = _kill(_attempt(overrides, tmp_path), ckpt_dir, in_a_write=attempt == 0, rng=rng)
        logged = loss_curve(mlflow_uri, runs_of(MlflowClient(mlflow_uri), "sigkill_real")[0].info.run_id)
        resumable = (
            load_checkpoint(ckpt_dir / "last.ckpt")["global_step"] if _mtime(ckpt_dir / "last.ckpt") else 0
        )
        lost.append(max(logged, default=-1) + 1 - resumable)
        print(f"kill {attempt} hit {hit}; resumes at step {resumable} (from {before}), {lost[-1]} steps lost")
    result = train(compose_train(overrides))  # the last attempt, to the end (in-process: no start-up)
    [run] = runs_of(MlflowClient(mlflow_uri), "sigkill_real")
    assert run.info.run_id == result["run_id"] and run.info.status == "FINISHED"
    assert_same_curve(loss_curve(mlflow_uri, run.info.run_id), reference.curve)
    assert max(lost) <= CHECKPOINT_EVERY + 1  # the steps since the last checkpoint (+ one logged late)


def test_sigkill_sample_resumes_exactly(demo_shards, tmp_path, mlflow_uri, reference):
    _real_kills(demo_shards, tmp_path / "real", mlflow_uri, reference, kills=1, seed=1)
    _simulated_trials(demo_shards, tmp_path / "simulated", mlflow_uri, reference, count=4, seed=2)


@pytest.mark.slow
def test_sigkill_campaign_of_25_trials_resumes_exactly(demo_shards, tmp_path, reference):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _real_kills(demo_shards, tmp_path / "real", uri, reference, kills=3, seed=11)
    _simulated_trials(demo_shards, tmp_path / "simulated", uri, reference, count=22, seed=12)
    shutil.rmtree(tmp_path / "simulated")
