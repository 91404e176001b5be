"""Training jobs on a real Slurm cluster through Hydra's submitit launcher (hydra/launcher=slurm_local).

One sweep of two demo jobs, one of which is requeued (``scontrol requeue``) after its first checkpoint, feeds
the sweep and requeue tests; a 2-task DDP job runs its ranks under srun. Runs take a minute or two each on a
busy 2-core machine: the module keeps them as few and as small as the assertions allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster.conftest import (
    CPU_RUN,
    LocalSlurm,
    cleaned_up,
    logged_steps,
    mlflow_runs,
    requeue_now,
    start_submission,
    wait_until,
)

pytestmark = pytest.mark.slow

EPOCHS = 3
BATCHES_PER_EPOCH = 6
SUBMIT_TIMEOUT_S = 420


@dataclass(frozen=True)
class RequeuedSweep:
    tracking_uri: str
    sweep_dir: Path
    requeued_job: str
    restarts: int
    run_id_before_requeue: str
    steps_before_requeue: list[int]


@pytest.fixture(scope="module")
def requeued_sweep(
    local_slurm: LocalSlurm,
    demo_shards: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> RequeuedSweep:
    """Sweeps seed=1,2 of the demo experiment; requeues job 0 once its first checkpoint is on disk."""
    work = tmp_path_factory.mktemp("sweep")
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    sweep_dir = work / "multirun"
    submission = start_submission(
        local_slurm,
        work,
        *CPU_RUN,
        "+experiment=demo",
        f"data.root={demo_shards}",
        f"logger.tracking_uri={tracking_uri}",
        f"hydra.sweep.dir={sweep_dir}",
        f"trainer.max_epochs={EPOCHS}",
        f"trainer.limit_train_batches={BATCHES_PER_EPOCH}",
        "callbacks.periodic_checkpoint.every_n_train_steps=2",
        "seed=1,2",
    )
    with cleaned_up(local_slurm, submission):
        ckpt_dir = sweep_dir / "0_demo-seed1" / "checkpoints"
        wait_until(
            lambda: (ckpt_dir / "last.ckpt").is_file() or submission.process.poll() is not None,
            timeout_s=300,
            what=f"the first checkpoint in {ckpt_dir}",
        )
        ended = submission.process.poll() is not None
        assert not ended, f"the sweep ended before job 0 checkpointed:\n{submission.tail()}"
        job = _array_task_id(sweep_dir, task=0)
        (run_before,) = [run for run in mlflow_runs(tracking_uri) if run.info.run_name == "demo-seed1"]
        steps_before = logged_steps(tracking_uri, run_before.info.run_id)
        restarts = requeue_now(local_slurm, job)
        returncode = submission.wait(SUBMIT_TIMEOUT_S)
    assert returncode == 0, f"the sweep failed (exit {returncode}):\n{submission.tail()}"
    return RequeuedSweep(tracking_uri, sweep_dir, job, restarts, run_before.info.run_id, steps_before)


def _array_task_id(sweep_dir: Path, task: int) -> str:
    """submitit keeps each job's files in <sweep>/.submitit/<array job id>_<task>."""
    folders = sorted((sweep_dir / ".submitit").glob(f"*_{task}"))
    assert len(folders) == 1, f"expected one submitit folder for task {task}, found {folders}"
    return folders[0].name


def test_sweep_lands_one_mlflow_run_per_job(requeued_sweep: RequeuedSweep) -> None:
    runs = mlflow_runs(requeued_sweep.tracking_uri)
    assert sorted(run.info.run_name for run in runs) == ["demo-seed1", "demo-seed2"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert {run.data.tags["study"] for run in runs} == {requeued_sweep.sweep_dir.name}
    entries = sorted(entry.name for entry in requeued_sweep.sweep_dir.iterdir() if entry.name[0] != ".")
    assert entries == ["0_demo-seed1", "1_demo-seed2", "multirun.yaml"]


def test_requeued_job_resumes_into_the_same_run(requeued_sweep: RequeuedSweep) -> None:
    assert requeued_sweep.restarts >= 1, "the job was not requeued (Slurm counted no restart)"
    (run,) = [run for run in mlflow_runs(requeued_sweep.tracking_uri) if run.info.run_name == "demo-seed1"]
    assert requeued_sweep.run_id_before_requeue == run.info.run_id
    job_log = next((requeued_sweep.sweep_dir / ".submitit" / requeued_sweep.requeued_job).glob("*_0_log.out"))
    assert "continuing MLflow run " + run.info.run_id in job_log.read_text()
    steps = logged_steps(requeued_sweep.tracking_uri, run.info.run_id)
    # Every optimisation step logged exactly once across both attempts: none lost, none repeated.
    assert steps == list(range(EPOCHS * BATCHES_PER_EPOCH))
    assert set(requeued_sweep.steps_before_requeue) < set(steps)


def test_ddp_job_runs_two_ranks_under_srun(local_slurm: LocalSlurm, tmp_path: Path) -> None:
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "multirun"
    submission = start_submission(
        local_slurm,
        tmp_path,
        *CPU_RUN,
        "trainer=ddp",  # devices=2 -> hydra.launcher.tasks_per_node=2: srun starts both ranks
        "data=synthetic",
        "model.width=0.25",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        f"logger.tracking_uri={tracking_uri}",
        f"hydra.sweep.dir={sweep_dir}",
    )
    with cleaned_up(local_slurm, submission):
        returncode = submission.wait(SUBMIT_TIMEOUT_S)
    assert returncode == 0, f"the DDP job failed (exit {returncode}):\n{submission.tail()}"
    (run,) = mlflow_runs(tracking_uri)
    assert run.data.tags["world_size"] == "2"
    assert run.data.tags["strategy"] == "DDPStrategy"
    assert logged_steps(tracking_uri, run.info.run_id) == [0, 1, 2]
    (job_folder,) = [entry for entry in (sweep_dir / ".submitit").iterdir() if entry.is_dir()]
    task_logs = sorted(path.name for path in job_folder.glob("*_log.out"))
    assert task_logs == [f"{job_folder.name}_0_log.out", f"{job_folder.name}_1_log.out"]
    assert "global_rank=1(2)" in (job_folder / task_logs[1]).read_text()
    assert [path.name for path in sweep_dir.iterdir() if path.is_dir() and not path.name.startswith(".")] == [
        "0_baseline-seed0"
    ]
