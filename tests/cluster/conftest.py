"""Real Slurm clusters (scripts/local_slurm.sh) on this host, one node or two, and helpers to drive them.

Every wait is bounded: there is no accounting daemon here, so submitit cannot see a job die without a
result file and would wait forever; each submission runs under a timeout, and stopping the cluster cancels
what is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pipeline.tracking import keys
from tests.helpers.paths import REPO
from tests.helpers.services import start_service

SCRIPT = REPO / "scripts" / "local_slurm.sh"
START_TIMEOUT_S = 240  # includes apt-get install on a fresh CI machine
# Small and CPU-only; log every step so steps can be counted.
CPU_RUN = (
    "hydra/launcher=slurm_local",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "trainer.limit_val_batches=1",
    "callbacks.conv1_figure=null",
)


@dataclass(frozen=True)
class LocalSlurm:
    """A running local cluster: ``env`` holds SLURM_CONF for the Slurm commands and for submitted jobs."""

    directory: Path
    env: dict[str, str]

    def run(self, *command: str, timeout_s: float = 30) -> str:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def job_state(self, job_id: str) -> tuple[str, str]:
        """(state, reason) of a job still known to slurmctld, ("", "") once it has left the queue."""
        out = self.run("squeue", "--noheader", "--jobs", job_id, "--format=%T|%r").strip()
        if not out:
            return "", ""
        state, reason = out.splitlines()[0].split("|", 1)
        return state, reason

    def restart_count(self, job_id: str) -> int:
        out = self.run("scontrol", "show", "job", job_id)
        for field in out.split():
            if field.startswith("Restarts="):
                return int(field.removeprefix("Restarts="))
        raise ValueError(f"scontrol show job {job_id} printed no Restarts= field:\n{out}")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the local Slurm cluster runs its daemons as root (SlurmdUser=root): run these tests as root"
    have_slurm = all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "munged"))
    if not have_slurm and not shutil.which("apt-get"):
        return "Slurm and MUNGE are not installed and apt-get is unavailable to install slurm-wlm and munge"
    return None


@contextmanager
def _local_cluster(directory: Path, nodes: int) -> Iterator[LocalSlurm]:
    """``scripts/local_slurm.sh start`` with LOCAL_SLURM_NODES=nodes; stops it (daemons and jobs) on exit."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "CI": os.environ.get("CI", "true"), "LOCAL_SLURM_NODES": str(nodes)}
    started = start_service(SCRIPT, directory, env, START_TIMEOUT_S)
    try:
        assert started.returncode == 0, f"local_slurm.sh start failed:\n{started.stdout}\n{started.stderr}"
        env["SLURM_CONF"] = str(directory / "slurm.conf")
        yield LocalSlurm(directory=directory, env=env)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(directory)], env=env, timeout=60, check=False)


@pytest.fixture(scope="session")
def local_slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    """One node with all of this host's CPUs."""
    with _local_cluster(tmp_path_factory.mktemp("slurm"), nodes=1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def two_node_slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    """Two nodes, node1 and node2: two slurmd daemons on this host, each with half of its CPUs and memory."""
    with _local_cluster(tmp_path_factory.mktemp("slurm2"), nodes=2) as cluster:
        yield cluster


@dataclass
class Submission:
    """A ``python -m pipeline.train -m ...`` process: the launcher blocks until every job has a result."""

    process: subprocess.Popen[str]
    log: Path

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            pytest.fail(f"the submission did not finish within {timeout_s:.0f}s; log:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_submission(local_slurm: LocalSlurm, cwd: Path, *overrides: str) -> Submission:
    """Starts ``python -m pipeline.train -m <overrides>`` on the local cluster, logging to cwd/submit.log."""
    log = cwd / "submit.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.train", "-m", *overrides],
            cwd=cwd,
            env={**local_slurm.env, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "1"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: a timeout kills the launcher and nothing else
        )
    return Submission(process=process, log=log)


@contextmanager
def cleaned_up(local_slurm: LocalSlurm, submission: Submission) -> Iterator[Submission]:
    """Kills the submitting process and cancels its jobs if the test leaves early."""
    try:
        yield submission
    finally:
        if submission.process.poll() is None:
            os.killpg(submission.process.pid, signal.SIGKILL)
            submission.process.wait()
        jobs = local_slurm.run("squeue", "--noheader", "--format=%A").split()
        if jobs:
            local_slurm.run("scancel", *jobs)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")


def mlflow_runs(tracking_uri: str) -> list[Run]:
    client = MlflowClient(tracking_uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    return client.search_runs(experiments)


def logged_steps(tracking_uri: str, run_id: str, key: str = keys.TRAIN_LOSS) -> list[int]:
    return sorted(metric.step for metric in MlflowClient(tracking_uri).get_metric_history(run_id, key))


def requeue_now(cluster: LocalSlurm, job: str) -> int:
    """``scontrol requeue`` a running job and let it start again at once; returns Slurm's restart count.

    Slurm holds a requeued job back for a while (BeginTime); a real cluster waits, a test need not."""
    cluster.run("scontrol", "requeue", job)
    wait_until(lambda: cluster.job_state(job) == ("PENDING", "BeginTime"), 60, f"job {job} requeued")
    cluster.run("scontrol", "update", f"jobid={job}", "StartTime=now")
    return cluster.restart_count(job)


@dataclass(frozen=True)
class SweepOutput:
    """Where a submission started in ``work`` writes: its MLflow store and Hydra's sweep folder."""

    tracking_uri: str
    sweep_dir: Path

    @staticmethod
    def under(work: Path) -> SweepOutput:
        return SweepOutput(f"sqlite:///{work / 'mlflow.db'}", work / "multirun")

    def overrides(self) -> tuple[str, ...]:
        return (f"logger.tracking_uri={self.tracking_uri}", f"hydra.sweep.dir={self.sweep_dir}")


def submit_and_wait(cluster: LocalSlurm, work: Path, *overrides: str, timeout_s: float) -> SweepOutput:
    """``python -m pipeline.train -m`` with ``CPU_RUN`` and ``overrides`` until every job has a result; fails
    the test unless it exits 0."""
    output = SweepOutput.under(work)
    submission = start_submission(cluster, work, *CPU_RUN, *overrides, *output.overrides())
    with cleaned_up(cluster, submission):
        returncode = submission.wait(timeout_s)
    assert returncode == 0, f"the submission failed (exit {returncode}):\n{submission.tail()}"
    return output


def job_folder(sweep_dir: Path) -> Path:
    """submitit's folder of a sweep's only Slurm job: <sweep>/.submitit/<job id>."""
    (folder,) = [entry for entry in (sweep_dir / ".submitit").iterdir() if entry.is_dir()]
    return folder


# The requeue tests' demo run: three epochs of six steps, checkpointed every two steps, so that a requeue
# after the first checkpoint leaves most of the steps to the second attempt.
REQUEUE_EPOCHS = 3
REQUEUE_BATCHES_PER_EPOCH = 6


@dataclass(frozen=True)
class RequeuedDemo(SweepOutput):
    """A demo submission whose job 0 was requeued once: the requeued Slurm job, Slurm's restart count and,
    from before the requeue, the job's MLflow run and the steps it had logged."""

    job: str
    restarts: int
    run_id_before_requeue: str
    steps_before_requeue: list[int]


def requeue_demo_after_first_checkpoint(
    cluster: LocalSlurm,
    work: Path,
    demo_shards: Path,
    *overrides: str,
    run_name: str,
    job_of: Callable[[Path], str],
    timeout_s: float,
) -> RequeuedDemo:
    """Submits the demo experiment (``overrides`` added), requeues the sweep's job 0 (run ``run_name``) once
    its first checkpoint is on disk, and waits for the submission to end; fails the test unless it exits 0.

    ``job_of(sweep_dir)`` names job 0's Slurm job (submitit's folder name for it).
    """
    output = SweepOutput.under(work)
    tracking_uri, sweep_dir = output.tracking_uri, output.sweep_dir
    submission = start_submission(
        cluster,
        work,
        *CPU_RUN,
        *output.overrides(),
        "+experiment=demo",
        f"data.root={demo_shards}",
        f"trainer.max_epochs={REQUEUE_EPOCHS}",
        f"trainer.limit_train_batches={REQUEUE_BATCHES_PER_EPOCH}",
        "callbacks.periodic_checkpoint.every_n_train_steps=2",
        *overrides,
    )
    with cleaned_up(cluster, submission):
        ckpt_dir = sweep_dir / f"0_{run_name}" / "checkpoints"
        wait_until(
            lambda: (ckpt_dir / "last.ckpt").is_file() or submission.process.poll() is not None,
            timeout_s=300,
            what=f"the first checkpoint in {ckpt_dir}",
        )
        ended = submission.process.poll() is not None
        assert not ended, f"the submission ended before job 0 checkpointed:\n{submission.tail()}"
        job = job_of(sweep_dir)
        (run_before,) = [run for run in mlflow_runs(tracking_uri) if run.info.run_name == run_name]
        steps_before = logged_steps(tracking_uri, run_before.info.run_id)
        restarts = requeue_now(cluster, job)
        returncode = submission.wait(timeout_s)
    assert returncode == 0, f"the requeued submission failed (exit {returncode}):\n{submission.tail()}"
    return RequeuedDemo(tracking_uri, sweep_dir, job, restarts, run_before.info.run_id, steps_before)


def assert_resumed_every_step(requeued: RequeuedDemo, run_id: str) -> None:
    """The run took over after the requeue and logged every optimisation step exactly once across both
    attempts: none lost, none repeated."""
    assert requeued.restarts >= 1, "the job was not requeued (Slurm counted no restart)"
    assert run_id == requeued.run_id_before_requeue
    steps = logged_steps(requeued.tracking_uri, run_id)
    assert steps == list(range(REQUEUE_EPOCHS * REQUEUE_BATCHES_PER_EPOCH))
    assert set(requeued.steps_before_requeue) < set(steps)
