"""Training jobs on a real Slurm cluster through Hydra's submitit launcher (hydra/launcher=slurm_local).

One sweep of two demo jobs, one of which is requeued (``scontrol requeue``) after its first checkpoint, feeds
the sweep and requeue tests; a 2-task DDP job runs its ranks under srun. Runs take a minute or two each on a
busy 2-core machine: the module keeps them as few and as small as the assertions allow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.conftest import (
    LocalSlurm,
    RequeuedDemo,
    assert_resumed_every_step,
    job_folder,
    logged_steps,
    mlflow_runs,
    requeue_demo_after_first_checkpoint,
    submit_and_wait,
)

pytestmark = pytest.mark.slow

SUBMIT_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def requeued_sweep(
    local_slurm: LocalSlurm,
    demo_shards: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> RequeuedDemo:
    """Sweeps seed=1,2 of the demo experiment; requeues job 0 once its first checkpoint is on disk."""
    return requeue_demo_after_first_checkpoint(
        local_slurm,
        tmp_path_factory.mktemp("sweep"),
        demo_shards,
        "seed=1,2",
        run_name="demo-seed1",
        job_of=lambda sweep_dir: _array_task_id(sweep_dir, task=0),
        timeout_s=SUBMIT_TIMEOUT_S,
    )


def _array_task_id(sweep_dir: Path, task: int) -> str:
    """submitit keeps each job's files in <sweep>/.submitit/<array job id>_<task>."""
    folders = sorted((sweep_dir / ".submitit").glob(f"*_{task}"))
    assert len(folders) == 1, f"expected one submitit folder for task {task}, found {folders}"
    return folders[0].name


def test_sweep_lands_one_mlflow_run_per_job(requeued_sweep: RequeuedDemo) -> None:
    runs = mlflow_runs(requeued_sweep.tracking_uri)
    assert sorted(run.info.run_name for run in runs) == ["demo-seed1", "demo-seed2"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert {run.data.tags["study"] for run in runs} == {requeued_sweep.sweep_dir.name}
    entries = sorted(entry.name for entry in requeued_sweep.sweep_dir.iterdir() if entry.name[0] != ".")
    assert entries == ["0_demo-seed1", "1_demo-seed2", "multirun.yaml"]


def test_requeued_job_resumes_into_the_same_run(requeued_sweep: RequeuedDemo) -> None:
    (run,) = [run for run in mlflow_runs(requeued_sweep.tracking_uri) if run.info.run_name == "demo-seed1"]
    assert_resumed_every_step(requeued_sweep, run.info.run_id)
    job_log = next((requeued_sweep.sweep_dir / ".submitit" / requeued_sweep.job).glob("*_0_log.out"))
    assert "continuing MLflow run " + run.info.run_id in job_log.read_text()


def test_ddp_job_runs_two_ranks_under_srun(local_slurm: LocalSlurm, tmp_path: Path) -> None:
    output = submit_and_wait(
        local_slurm,
        tmp_path,
        "trainer=ddp",  # devices=2 -> hydra.launcher.tasks_per_node=2: srun starts both ranks
        "data=synthetic",
        "model.width=0.25",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        timeout_s=SUBMIT_TIMEOUT_S,
    )
    tracking_uri, sweep_dir = output.tracking_uri, output.sweep_dir
    (run,) = mlflow_runs(tracking_uri)
    assert run.data.tags["world_size"] == "2"
    assert run.data.tags["strategy"] == "DDPStrategy"
    assert logged_steps(tracking_uri, run.info.run_id) == [0, 1, 2]
    job = job_folder(sweep_dir)
    task_logs = sorted(path.name for path in job.glob("*_log.out"))
    assert task_logs == [f"{job.name}_0_log.out", f"{job.name}_1_log.out"]
    assert "global_rank=1(2)" in (job / task_logs[1]).read_text()
    assert [path.name for path in sweep_dir.iterdir() if path.is_dir() and not path.name.startswith(".")] == [
        "0_baseline-seed0"
    ]
