"""DDP jobs across two Slurm nodes through the launcher: trainer=ddp trainer.num_nodes=2 trainer.devices=1.

The two nodes are two slurmd daemons on this host (``LOCAL_SLURM_NODES=2 scripts/local_slurm.sh``), each with
its own node name, port and spool; srun starts one rank on each and the ranks meet over gloo on loopback, as
they would over the network between real nodes (their names do not resolve: MASTER_ADDR=127.0.0.1, set by
hydra/launcher=slurm_local). One job checks the arithmetic against one process, the other a requeue.
Each job takes about a minute on an idle 2-core machine (Python and torch start in both ranks).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.tracking import keys
from tests.cluster.conftest import (
    CPU_RUN,
    LocalSlurm,
    assert_resumed_every_step,
    job_folder,
    logged_steps,
    mlflow_runs,
    requeue_demo_after_first_checkpoint,
    submit_and_wait,
)
from tests.helpers.training import SYNTHETIC, train_cli

pytestmark = pytest.mark.slow

SUBMIT_TIMEOUT_S = 420
TWO_NODES = ("trainer=ddp", "trainer.num_nodes=2", "trainer.devices=1")
# As tests/train/test_train_parallel.py's one-node DDP test: gloo sums the two half-batch gradients in another
# order than one process sums the whole batch (~1e-9 after 4 steps); a wrong split or scale shows as ~1e-3.
DDP_WEIGHT_TOLERANCE = 1e-6
# The one-node DDP test's deterministic in-memory data: 64 samples, global batch 16 = 4 steps, one epoch.
SYNTHETIC_EPOCH = (*SYNTHETIC, "trainer.max_epochs=1")


def _rank_logs(folder: Path) -> list[str]:
    """Each task's (rank's) own log, in rank order: srun writes <job>_<task>_log.out per task."""
    logs = sorted(folder.glob("*_log.out"))
    assert [path.name for path in logs] == [f"{folder.name}_{task}_log.out" for task in (0, 1)]
    return [path.read_text(errors="replace") for path in logs]


def _one_process_weights(tmp_path: Path) -> dict[str, torch.Tensor]:
    """The same run in one process (trainer=cpu), outside Slurm: the reference for the two-node weights."""
    run_dir = tmp_path / "one_process"
    train_cli(
        tmp_path,
        *SYNTHETIC_EPOCH,
        "trainer=cpu",
        *[override for override in CPU_RUN if not override.startswith("hydra/launcher")],
        f"logger.tracking_uri=sqlite:///{tmp_path / 'one_process.db'}",
        f"hydra.run.dir={run_dir}",
        timeout_s=300,
    )
    return _weights(run_dir / "checkpoints" / "last.ckpt")


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


def test_two_node_job_matches_one_process(two_node_slurm: LocalSlurm, tmp_path: Path) -> None:
    output = submit_and_wait(
        two_node_slurm, tmp_path, *TWO_NODES, *SYNTHETIC_EPOCH, timeout_s=SUBMIT_TIMEOUT_S
    )
    tracking_uri, sweep_dir = output.tracking_uri, output.sweep_dir

    (run,) = mlflow_runs(tracking_uri)
    assert run.info.status == "FINISHED"
    assert (run.data.tags["num_nodes"], run.data.tags["world_size"]) == ("2", "2")
    assert run.data.tags["strategy"] == "DDPStrategy"
    assert logged_steps(tracking_uri, run.info.run_id) == [0, 1, 2, 3]
    rank0, rank1 = _rank_logs(job_folder(sweep_dir))
    assert "global rank 0 of 2 on node node1" in rank0
    assert "global rank 1 of 2 on node node2" in rank1

    losses = MlflowClient(tracking_uri).get_metric_history(run.info.run_id, keys.TRAIN_LOSS)
    assert len({metric.value for metric in losses}) > 1  # it trained

    two_nodes = _weights(sweep_dir / "0_baseline-seed0" / "checkpoints" / "last.ckpt")
    one_process = _one_process_weights(tmp_path)
    assert two_nodes.keys() == one_process.keys()
    for key, value in one_process.items():
        torch.testing.assert_close(two_nodes[key], value, atol=DDP_WEIGHT_TOLERANCE, rtol=0, msg=key)


def test_requeued_two_node_job_resumes_into_the_same_run(
    two_node_slurm: LocalSlurm, demo_shards: Path, tmp_path: Path
) -> None:
    """The demo on both nodes, requeued (``scontrol requeue``) once its first checkpoint is on disk."""
    requeued = requeue_demo_after_first_checkpoint(
        two_node_slurm,
        tmp_path,
        demo_shards,
        *TWO_NODES,
        run_name="demo-seed0",
        job_of=lambda sweep_dir: job_folder(sweep_dir).name,
        timeout_s=SUBMIT_TIMEOUT_S,
    )
    (run,) = mlflow_runs(requeued.tracking_uri)
    assert_resumed_every_step(requeued, run.info.run_id)
    assert run.info.status == "FINISHED"
    assert (run.data.tags["num_nodes"], run.data.tags["world_size"]) == ("2", "2")
    # Both attempts ran a rank on each node (open-mode=append keeps every attempt's log).
    rank0, rank1 = _rank_logs(job_folder(requeued.sweep_dir))
    assert rank0.count("global rank 0 of 2 on node node1") == 2
    assert rank1.count("global rank 1 of 2 on node node2") == 2
    assert "continuing MLflow run " + run.info.run_id in rank0
