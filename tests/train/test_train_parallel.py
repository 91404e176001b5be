"""The paper's two-device split through train(cfg), and DDP on 2 gloo processes against 1 process."""

from __future__ import annotations

import pytest
import torch

from pipeline.models import AlexNet
from pipeline.tracking import keys
from pipeline.train import train
from tests.helpers.training import SYNTHETIC, compose_train, runs_of, synthetic_overrides, train_cli

# Same weights, same data, same arithmetic up to summation order (the split sums fc8's two partial logits and
# concatenates where the grouped net runs one grouped conv): float32 rounding only.
LOSS_TOLERANCE = 1e-4
# gloo's allreduce sums the two half-batch gradients in another order than one process sums the whole batch:
# measured differences ~1e-9 after 4 steps; a wrong data split or gradient scale shows up as ~1e-3.
DDP_WEIGHT_TOLERANCE = 1e-6


def _loss_curve(client, run_id: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, keys.TRAIN_LOSS), key=lambda m: m.step)]


def test_split_and_grouped_nets_follow_the_same_loss_curve(tmp_path, mlflow_uri, client):
    grouped = train(compose_train(synthetic_overrides(tmp_path / "grouped", mlflow_uri, "split")))
    split_overrides = [
        *synthetic_overrides(tmp_path / "split", mlflow_uri, "split"),
        "trainer=model_parallel",
    ]
    split = train(
        compose_train([*split_overrides, "trainer.accelerator=cpu", "model.split_devices=[cpu,cpu]"])
    )

    grouped_curve = _loss_curve(client, grouped["run_id"])
    split_curve = _loss_curve(client, split["run_id"])
    assert len(grouped_curve) == len(split_curve) == 4
    assert split_curve == pytest.approx(grouped_curve, abs=LOSS_TOLERANCE)
    assert grouped_curve[-1] != grouped_curve[0]  # it did train
    # the split run's checkpoint loads into the one-device grouped net
    state = torch.load(split["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    net = AlexNet(10, width=0.0625, dropout=0.0)
    net.load_state_dict(
        {key.removeprefix("net."): value for key, value in state.items() if key.startswith("net.")}
    )


def test_split_with_ddp_is_refused_before_any_run(tmp_path, mlflow_uri, client):
    overrides = [
        *synthetic_overrides(tmp_path, mlflow_uri, "split_ddp"),
        "trainer=ddp",
        "model.split_devices=[cpu,cpu]",
    ]
    with pytest.raises(ValueError, match="split"):
        train(compose_train(overrides))
    assert runs_of(client, "split_ddp") == []


def _cli(tmp_path, run_dir, uri: str, *overrides: str) -> None:
    train_cli(
        tmp_path,
        *SYNTHETIC,
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "logger.experiment_name=ddp",
        f"logger.tracking_uri={uri}",
        f"hydra.run.dir={run_dir}",
        *overrides,
        timeout_s=400,
    )


@pytest.mark.slow
def test_ddp_on_two_ranks_matches_one_process_with_the_same_global_batch(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _cli(tmp_path, tmp_path / "ddp", uri, "trainer=ddp", "trainer.devices=2")
    _cli(tmp_path, tmp_path / "single", uri, "trainer=cpu")

    def weights(run: str) -> dict[str, torch.Tensor]:
        ckpt = torch.load(tmp_path / run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        return ckpt["state_dict"]

    ddp, single = weights("ddp"), weights("single")
    start = AlexNet(10, width=0.0625, dropout=0.0).state_dict()
    assert any(not torch.equal(ddp[f"net.{k}"], v) for k, v in start.items())  # the weights moved
    for key, value in single.items():
        torch.testing.assert_close(ddp[key], value, atol=DDP_WEIGHT_TOLERANCE, rtol=0, msg=key)
    # one MLflow run for the 2-process job; one output directory that both ranks used
    from mlflow.tracking import MlflowClient

    runs = runs_of(MlflowClient(uri), "ddp")
    assert sorted(run.data.tags["world_size"] for run in runs) == ["1", "2"]
    assert (tmp_path / "ddp" / "train_ddp_process_1.log").is_file()
    assert not (tmp_path / "outputs").exists()
    # (mlruns/ is the sqlite store's artifact root, MLflow's default beside the working directory; the store's
    # write-ahead log and the lock serialising its creation sit beside it: pipeline/tracking/shared_store.py)
    store_files = ["mlflow.db", "mlflow.db-shm", "mlflow.db-wal", "mlflow.db.lock"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [name for name in names if name not in store_files] == ["ddp", "mlruns", "single"]
    assert "mlflow.db" in names
