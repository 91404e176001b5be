"""Slurm's time limit on the local cluster: a job submitted with a two-minute limit and ``--signal=USR1@110``
(the launcher's ``timeout_min`` and ``signal_delay_s``) gets SIGUSR1 from slurmctld while it starts up or
trains. It stops at a step boundary, writes last.ckpt, leaves its MLflow run RUNNING and requeues itself
(``scontrol requeue`` from rank 0). Given room, the requeued job continues the same run to FINISHED with every
step logged once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.conftest import (
    CPU_RUN,
    LocalSlurm,
    SweepOutput,
    cleaned_up,
    logged_steps,
    mlflow_runs,
    start_submission,
    wait_until,
)

pytestmark = pytest.mark.slow

TIME_LIMIT_MIN = 2
# slurmctld sends it 10-40 s into the job (its checks of time limits run every 30 s): maybe before training
# starts, which the job must survive too (pipeline.training.requeue_signal)
SIGNAL_DELAY_S = 110
EPOCHS, BATCHES = 3, 6
STEP_SLEEP_S = 3  # 18 steps of at least 3 s: the job has not finished when the signal comes
SUBMIT_TIMEOUT_S = 480


def _submitted_job(sweep_dir: Path) -> str:
    """The sweep's only Slurm job: submitit names its folder <sweep>/.submitit/<job id>."""
    folder = sweep_dir / ".submitit"
    jobs = sorted(entry.name for entry in folder.iterdir() if entry.is_dir()) if folder.is_dir() else []
    return jobs[0] if jobs else ""


def test_the_time_limit_signal_requeues_the_job_into_the_same_run(
    local_slurm: LocalSlurm, demo_shards: Path, tmp_path: Path
) -> None:
    output = SweepOutput.under(tmp_path)
    submission = start_submission(
        local_slurm,
        tmp_path,
        *CPU_RUN,
        *output.overrides(),
        "+experiment=demo",
        f"data.root={demo_shards}",
        f"trainer.max_epochs={EPOCHS}",
        f"trainer.limit_train_batches={BATCHES}",
        f"hydra.launcher.timeout_min={TIME_LIMIT_MIN}",
        f"hydra.launcher.signal_delay_s={SIGNAL_DELAY_S}",
        "+callbacks.step_clock._target_=tests.helpers.faults.StepClock",
        f"+callbacks.step_clock.path={tmp_path / 'steps.txt'}",
        f"+callbacks.step_clock.sleep_s={STEP_SLEEP_S}",
    )
    with cleaned_up(local_slurm, submission):
        wait_until(lambda: bool(_submitted_job(output.sweep_dir)), 60, "the job's submitit folder")
        job = _submitted_job(output.sweep_dir)
        wait_until(
            lambda: (
                local_slurm.job_state(job) == ("PENDING", "BeginTime")
                or submission.process.poll() is not None
            ),
            timeout_s=300,
            what=f"job {job} to requeue itself at its time-limit signal",
        )
        assert submission.process.poll() is None, f"the job ended instead of requeuing:\n{submission.tail()}"
        assert list(output.sweep_dir.glob("*/checkpoints/last.ckpt")), "no last.ckpt before the requeue"
        (run_before,) = mlflow_runs(output.tracking_uri)
        assert run_before.info.status == "RUNNING"
        steps_before = logged_steps(output.tracking_uri, run_before.info.run_id)
        assert len(steps_before) < EPOCHS * BATCHES, steps_before  # none yet if it came before training
        restarts = local_slurm.restart_count(job)
        # the second attempt gets room to finish; Slurm would hold the requeued job back a while (BeginTime)
        local_slurm.run("scontrol", "update", f"jobid={job}", "TimeLimit=20", "StartTime=now")
        returncode = submission.wait(SUBMIT_TIMEOUT_S)
    assert returncode == 0, f"the requeued submission failed (exit {returncode}):\n{submission.tail()}"
    assert restarts >= 1
    (run,) = mlflow_runs(output.tracking_uri)
    assert run.info.run_id == run_before.info.run_id
    assert run.info.status == "FINISHED"
    assert logged_steps(output.tracking_uri, run.info.run_id) == list(range(EPOCHS * BATCHES))
    job_logs = "".join(
        path.read_text(errors="replace") for path in (output.sweep_dir / ".submitit" / job).glob("*_0_log.*")
    )
    assert "SIGUSR1 (time limit near): stopping after step" in job_logs
