"""Training jobs on a real Slurm cluster through Hydra's submitit launcher (hydra/launcher=slurm_local).

One sweep of two demo jobs, one of which is requeued (``scontrol requeue``) after its first checkpoint, feeds
the sweep and requeue tests; a 2-task DDP job runs its ranks under srun. Runs take a minute or two each on a
busy 2-core machine: the module keeps them as few and as small as the assertions allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.cluster.conftest import LocalSlurm, cleaned_up, start_submission, wait_until

pytestmark = pytest.mark.slow

EPOCHS = 3
BATCHES_PER_EPOCH = 6
SUBMIT_TIMEOUT_S = 420
# Small and CPU-only; log and checkpoint every few steps so a requeue has something to resume from.
CPU_RUN = (
    "hydra/launcher=slurm_local",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "trainer.limit_val_batches=1",
    "callbacks.conv1_figure=null",
)


def _runs(tracking_uri: str) -> list[Run]:
    client = MlflowClient(tracking_uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    return client.search_runs(experiments)


def _logged_steps(tracking_uri: str, run_id: str, key: str = "train/loss") -> list[int]:
    return sorted(metric.step for metric in MlflowClient(tracking_uri).get_metric_history(run_id, key))


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
        (run_before,) = [run for run in _runs(tracking_uri) if run.info.run_name == "demo-seed1"]
        steps_before = _logged_steps(tracking_uri, run_before.info.run_id)
        local_slurm.run("scontrol", "requeue", job)
        # Slurm holds a requeued job back for a while (BeginTime); a real cluster waits, the test need not.
        wait_until(lambda: local_slurm.job_state(job) == ("PENDING", "BeginTime"), 60, f"job {job} requeued")
        local_slurm.run("scontrol", "update", f"jobid={job}", "StartTime=now")
        restarts = local_slurm.restart_count(job)
        returncode = submission.wait(SUBMIT_TIMEOUT_S)
    assert returncode == 0, f"the sweep failed (exit {returncode}):\n{submission.tail()}"
    return RequeuedSweep(tracking_uri, sweep_dir, job, restarts, run_before.info.run_id, steps_before)


def _array_task_id(sweep_dir: Path, task: int) -> str:
    """submitit keeps each job's files in <sweep>/.submitit/<array job id>_<task>."""
    folders = sorted((sweep_dir / ".submitit").glob(f"*_{task}"))
    assert len(folders) == 1, f"expected one submitit folder for task {task}, found {folders}"
    return folders[0].name


def test_sweep_lands_one_mlflow_run_per_job(requeued_sweep: RequeuedSweep) -> None:
    runs = _runs(requeued_sweep.tracking_uri)
    assert sorted(run.info.run_name for run in runs) == ["demo-seed1", "demo-seed2"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert {run.data.tags["study"] for run in runs} == {requeued_sweep.sweep_dir.name}
    entries = sorted(entry.name for entry in requeued_sweep.sweep_dir.iterdir() if entry.name[0] != ".")
    assert entries == ["0_demo-seed1", "1_demo-seed2", "multirun.yaml"]


def test_requeued_job_resumes_into_the_same_run(requeued_sweep: RequeuedSweep) -> None:
    assert requeued_sweep.restarts >= 1, "the job was not requeued (Slurm counted no restart)"
    (run,) = [run for run in _runs(requeued_sweep.tracking_uri) if run.info.run_name == "demo-seed1"]
    assert requeued_sweep.run_id_before_requeue == run.info.run_id
    job_log = next((requeued_sweep.sweep_dir / ".submitit" / requeued_sweep.requeued_job).glob("*_0_log.out"))
    assert "continuing MLflow run " + run.info.run_id in job_log.read_text()
    steps = _logged_steps(requeued_sweep.tracking_uri, run.info.run_id)
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
    (run,) = _runs(tracking_uri)
    assert run.data.tags["world_size"] == "2"
    assert run.data.tags["strategy"] == "DDPStrategy"
    assert _logged_steps(tracking_uri, run.info.run_id) == [0, 1, 2]
    (job_folder,) = [entry for entry in (sweep_dir / ".submitit").iterdir() if entry.is_dir()]
    task_logs = sorted(path.name for path in job_folder.glob("*_log.out"))
    assert task_logs == [f"{job_folder.name}_0_log.out", f"{job_folder.name}_1_log.out"]
    assert "global_rank=1(2)" in (job_folder / task_logs[1]).read_text()
    assert [path.name for path in sweep_dir.iterdir() if path.is_dir() and not path.name.startswith(".")] == [
        "0_baseline-seed0"
    ]
