"""A job stopped by SIGTERM (Slurm's preemption) at a random step and resumed trains on exactly the sample
sequence of an uninterrupted job: every step's train loss and the final weights equal its (CPU, fp32), on one
process with 2 loader workers and on 2 DDP ranks x 2 workers."""

from __future__ import annotations

import random
import shutil

import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException
from mlflow.tracking import MlflowClient

from pipeline.checkpoints import load_checkpoint
from pipeline.train import train
from tests.helpers.resume import (
    EPOCHS,
    STEPS_PER_EPOCH,
    assert_same_curve,
    assert_same_weights,
    cli,
    final_weights,
    job_overrides,
    loss_curve,
)
from tests.helpers.training import compose_train, runs_of

STEPS = EPOCHS * STEPS_PER_EPOCH


def _stop_at(step: int) -> list[str]:
    return ["+callbacks.fault._target_=tests.helpers.faults.SignalAtStep", f"+callbacks.fault.step={step}"]


def test_sigterm_at_a_random_step_resumes_every_step_exactly(demo_shards, tmp_path, mlflow_uri, reference):
    stop = random.Random().randrange(1, STEPS)  # any step but the last
    print(f"SIGTERM after step {stop}")
    job = job_overrides(demo_shards, tmp_path / "job", mlflow_uri, "exact")
    with pytest.raises(SIGTERMException):
        train(compose_train(job + _stop_at(stop)))
    resumed = train(compose_train(job))  # the requeued job: same ckpt_dir, finds last.ckpt and its run

    [run] = runs_of(MlflowClient(mlflow_uri), "exact")
    assert run.info.run_id == resumed["run_id"] and run.info.status == "FINISHED"
    assert_same_curve(loss_curve(mlflow_uri, resumed["run_id"]), reference.curve)
    assert_same_weights(final_weights(tmp_path / "job" / "checkpoints"), final_weights(reference.ckpt_dir))


def test_a_resume_from_the_end_of_epoch_checkpoint_draws_the_next_epochs_batches(
    demo_shards, tmp_path, mlflow_uri, reference
):
    """Lightning creates the train iterator before it moves on to the next epoch here (the checkpoint's epoch
    is complete): the loader must take its epoch when the first batch is drawn, not when it is created."""
    ckpt_dir = tmp_path / "job" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    shutil.copy(reference.archive / f"{STEPS_PER_EPOCH:05d}.ckpt", ckpt_dir / "last.ckpt")  # after validation
    job = job_overrides(demo_shards, tmp_path / "job", mlflow_uri, "epoch_end")
    resumed = train(compose_train([*job, f"ckpt_path={ckpt_dir / 'last.ckpt'}"]))
    curve = loss_curve(mlflow_uri, resumed["run_id"])
    assert sorted(curve) == list(range(STEPS_PER_EPOCH, STEPS))
    assert_same_curve(
        curve, {step: loss for step, loss in reference.curve.items() if step >= STEPS_PER_EPOCH}
    )


@pytest.mark.slow
def test_sigterm_resume_is_exact_on_two_ddp_ranks_with_two_workers_each(demo_shards, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    stop = random.Random().randrange(1, STEPS)
    ddp = ["trainer=ddp", "trainer.devices=2", "data.batch_size=32"]  # 16 per rank

    def run(name: str, experiment: str, *extra: str):
        overrides = job_overrides(demo_shards, tmp_path / name, uri, experiment)
        result = cli([*overrides, *ddp, *extra], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]  # SIGTERM: Lightning exits 0, no result
        return result

    run("ref", "ddp_reference")
    stopped = run("job", "ddp_resumed", *_stop_at(stop))
    assert f"SIGTERM: stopping after step {stop} on every rank" in stopped.stdout + stopped.stderr
    assert load_checkpoint(tmp_path / "job" / "checkpoints" / "last.ckpt")["global_step"] == stop
    run("job", "ddp_resumed")

    client = MlflowClient(uri)
    [reference], [resumed] = runs_of(client, "ddp_reference"), runs_of(client, "ddp_resumed")
    assert resumed.info.status == "FINISHED", f"stopped after step {stop}"
    assert_same_curve(loss_curve(uri, resumed.info.run_id), loss_curve(uri, reference.info.run_id))
    assert_same_weights(
        final_weights(tmp_path / "job" / "checkpoints"), final_weights(tmp_path / "ref" / "checkpoints")
    )
