"""A job stopped by SIGTERM (Slurm's preemption) at a random step and resumed trains on exactly the sample
sequence of an uninterrupted job: every step's train loss and the final weights equal its (CPU, fp32), on one
process with 2 loader workers and on 2 DDP ranks x 2 workers."""

from __future__ import annotations

import random

import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException
from resume_helpers import (
    EPOCHS,
    STEPS_PER_EPOCH,
    assert_same_curve,
    assert_same_weights,
    cli,
    final_weights,
    job_overrides,
    loss_curve,
)
from train_helpers import compose_train, runs_of

from pipeline.train import train

STEPS = EPOCHS * STEPS_PER_EPOCH


def _stop_at(step: int) -> list[str]:
    return ["+callbacks.fault._target_=faults.SignalAtStep", f"+callbacks.fault.step={step}"]


def test_sigterm_at_a_random_step_resumes_every_step_exactly(demo_shards, tmp_path, mlflow_uri):
    stop = random.Random().randrange(1, STEPS)  # any step but the last; printed on failure below
    reference = train(compose_train(job_overrides(demo_shards, tmp_path / "ref", mlflow_uri, "exact")))
    job = job_overrides(demo_shards, tmp_path / "job", mlflow_uri, "exact")
    with pytest.raises(SIGTERMException):
        train(compose_train(job + _stop_at(stop)))
    resumed = train(compose_train(job))  # the requeued job: same ckpt_dir, finds last.ckpt and its run

    assert resumed["run_id"] != reference["run_id"], f"stopped at step {stop}"
    from mlflow.tracking import MlflowClient

    run = MlflowClient(mlflow_uri).get_run(resumed["run_id"])
    assert run.info.status == "FINISHED"
    assert_same_curve(loss_curve(mlflow_uri, resumed["run_id"]), loss_curve(mlflow_uri, reference["run_id"]))
    assert_same_weights(
        final_weights(tmp_path / "job" / "checkpoints"), final_weights(tmp_path / "ref" / "checkpoints")
    )


@pytest.mark.slow
def test_sigterm_resume_is_exact_on_two_ddp_ranks_with_two_workers_each(demo_shards, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    stop = random.Random().randrange(1, STEPS)
    ddp = ["trainer=ddp", "trainer.devices=2", "data.batch_size=32"]  # 16 per rank

    def run(name: str, *extra: str):
        return cli([*job_overrides(demo_shards, tmp_path / name, uri, "ddp_exact"), *ddp, *extra], tmp_path)

    assert run("ref").returncode == 0
    stopped = run("job", *_stop_at(stop))
    assert stopped.returncode != 0 and "SIGTERM" in stopped.stderr, stopped.stderr[-2000:]
    resumed = run("job")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    from mlflow.tracking import MlflowClient

    runs = {run.info.run_name: run for run in runs_of(MlflowClient(uri), "ddp_exact")}
    assert len(runs_of(MlflowClient(uri), "ddp_exact")) == 2, f"stopped at step {stop}"
    curves = [loss_curve(uri, run.info.run_id) for run in runs_of(MlflowClient(uri), "ddp_exact")]
    assert all(run.info.status == "FINISHED" for run in runs.values())
    assert_same_curve(curves[0], curves[1])
    assert_same_weights(
        final_weights(tmp_path / "job" / "checkpoints"), final_weights(tmp_path / "ref" / "checkpoints")
    )
