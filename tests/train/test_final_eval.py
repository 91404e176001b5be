"""The paper's 10-crop test at the end of every training job (pipeline.training.final_eval), the 10 crops
checked by hand on a tiny net, and the run's data lineage."""

from __future__ import annotations

import hashlib
import json
import math
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.data import ShardDataModule
from pipeline.tracking import keys
from pipeline.train import train
from pipeline.training.evaluation import evaluate, tencrop_probabilities
from pipeline.training.final_eval import FinalEvaluation
from pipeline.training.module import AlexNetModule
from tests.helpers.training import compose_train, runs_of, shard_overrides, train_cli

SIDE, CROP = 6, 4
# The ten crops of a 6x6 image at 4x4, as (row, col) in the ORIGINAL image of the crop's top-left, top-right
# and bottom-left pixels. The paper's crops: the four corners and the centre (offset (6-4)/2 = 1), then the
# same five of the horizontally mirrored image, whose column c is the original's column 5 - c.
CROP_PIXELS = [
    ((0, 0), (0, 3), (3, 0)),  # top-left corner
    ((0, 2), (0, 5), (3, 2)),  # top-right corner
    ((2, 0), (2, 3), (5, 0)),  # bottom-left corner
    ((2, 2), (2, 5), (5, 2)),  # bottom-right corner
    ((1, 1), (1, 4), (4, 1)),  # centre
    ((0, 5), (0, 2), (3, 5)),  # mirrored: top-left corner
    ((0, 3), (0, 0), (3, 3)),  # mirrored: top-right corner
    ((2, 5), (2, 2), (5, 5)),  # mirrored: bottom-left corner
    ((2, 3), (2, 0), (5, 3)),  # mirrored: bottom-right corner
    ((1, 4), (1, 1), (4, 4)),  # mirrored: centre
]


class CornerNet(torch.nn.Module):
    """Three logits per crop: its top-left, top-right and bottom-left pixel (channel 0)."""

    hparams = SimpleNamespace(in_size=CROP)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.stack([crops[:, 0, 0, 0], crops[:, 0, 0, -1], crops[:, 0, -1, 0]], dim=1)


class OneBatch:
    """The datamodule interface evaluate() uses, over one batch of full-size images."""

    num_classes = 3

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def eval_dataloader(self, crop: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        assert crop == "full"
        return [(self.images, self.labels)]

    def normalize(self, images: torch.Tensor, *, train: bool) -> torch.Tensor:
        return images


def softmax(logits: list[float]) -> list[float]:
    exps = [math.exp(value) for value in logits]
    return [value / sum(exps) for value in exps]


def by_hand(image: list[list[float]]) -> list[list[float]]:
    """The ten crops' softmax, computed from the pixel positions above."""
    return [softmax([image[r][c] for r, c in corners]) for corners in CROP_PIXELS]


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def test_ten_crops_positions_and_softmax_average_by_hand():
    generator = torch.Generator().manual_seed(3)
    images = (3 * torch.rand(8, 1, SIDE, SIDE, generator=generator)).expand(8, 3, SIDE, SIDE).contiguous()
    probabilities = tencrop_probabilities(CornerNet(), images, CROP)
    hand = [by_hand(image[0].tolist()) for image in images]
    assert probabilities.shape == (10, 8, 3)
    assert torch.allclose(probabilities.permute(1, 0, 2), torch.tensor(hand), atol=1e-6)

    averaged = [[sum(crop[k] for crop in crops) / 10 for k in range(3)] for crops in hand]
    labels = torch.tensor([argmax(average) for average in averaged])  # 10-crop right everywhere
    centre_wrong = sum(argmax(crops[4]) != argmax(avg) for crops, avg in zip(hand, averaged, strict=True))
    assert centre_wrong > 0  # the images are such that the average decides otherwise than the centre crop
    metrics = evaluate(CornerNet(), OneBatch(images, labels), torch.device("cpu"))
    assert metrics[keys.TENCROP_TOP1] == 0.0
    assert metrics[keys.CENTER_TOP1] == pytest.approx(centre_wrong / 8)
    assert metrics[keys.TENCROP_TOP5] == 0.0  # 3 classes: "top-5" is top-3
    assert metrics[keys.EVAL_IMAGES] == 8


def test_disabled_final_eval_touches_nothing():
    FinalEvaluation(enabled=False).on_train_end(trainer=None, pl_module=None)  # returns before any use
    with pytest.raises(ValueError, match="callbacks.final_eval.weights"):
        FinalEvaluation(weights="last")


def test_a_training_ends_with_the_final_weights_evaluated_on_the_whole_val_split(
    demo_shards, tmp_path, mlflow_uri, client
):
    overrides = shard_overrides(demo_shards, tmp_path / "out", mlflow_uri, "final_eval")
    whole_split = [
        "trainer.limit_val_batches=null",
        "callbacks.final_eval.limit_batches=null",
        "data.val_batch_size=64",
    ]
    result = train(compose_train([*overrides, *whole_split]))
    [run] = runs_of(client, "final_eval")
    metrics, tags = run.data.metrics, run.data.tags
    assert metrics[keys.EVAL_IMAGES] == 359  # the demo's whole val split
    # the centre crop of the final weights on the whole split is the last validation, image for image
    assert metrics[keys.CENTER_TOP1] == pytest.approx(metrics[keys.VAL_TOP1])
    assert result[keys.TENCROP_TOP1] == pytest.approx(metrics[keys.TENCROP_TOP1])
    assert (tags["eval_weights"], tags["kind"]) == ("final", "training")
    [dataset_input] = run.inputs.dataset_inputs
    sha256 = hashlib.sha256((demo_shards / "manifest.json").read_bytes()).hexdigest()
    assert (dataset_input.dataset.digest, tags["data_manifest_sha256"]) == (sha256[:32], sha256)
    assert json.loads(dataset_input.dataset.source) == {"uri": str(demo_shards)}
    assert json.loads(dataset_input.dataset.profile)["val_samples"] == 359


def test_weights_best_scores_the_best_checkpoint(demo_shards, tmp_path, mlflow_uri, client):
    overrides = shard_overrides(demo_shards, tmp_path / "out", mlflow_uri, "final_eval_best")
    overrides += [
        "trainer.max_epochs=2",
        "callbacks.final_eval.weights=best",
        "callbacks.final_eval.limit_batches=2",
    ]
    result = train(compose_train(overrides))
    [run] = runs_of(client, "final_eval_best")
    assert run.data.tags["eval_weights"] == "best"
    best = AlexNetModule.load_from_checkpoint(result["best_checkpoint"], map_location="cpu")
    data = ShardDataModule(demo_shards, batch_size=16, num_workers=0, pca_lighting=0.0)
    expected = evaluate(best, data, torch.device("cpu"), limit_batches=2)
    for key in (keys.TENCROP_TOP1, keys.TENCROP_TOP5, keys.CENTER_TOP1):
        assert run.data.metrics[key] == pytest.approx(expected[key])


@pytest.mark.slow
def test_ddp_ranks_share_the_val_split_and_sum_their_counts(demo_shards, tmp_path):
    """Two ranks each score their share of the val images; the meters sum over the ranks: every image once,
    and the centre crop equals the (rank-synced) last validation."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
        f"data.root={demo_shards}", "data.batch_size=16", "data.val_batch_size=32", "data.num_workers=0",
        "data.shuffle_buffer=64", "model.width=0.0625", "trainer.limit_train_batches=3",
        "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
        f"logger.tracking_uri={uri}", "logger.experiment_name=ddp_eval", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    train_cli(tmp_path, *args, timeout_s=900)
    [run] = runs_of(MlflowClient(uri), "ddp_eval")
    assert run.data.metrics[keys.EVAL_IMAGES] == 359
    assert run.data.metrics[keys.CENTER_TOP1] == pytest.approx(run.data.metrics[keys.VAL_TOP1])
    assert run.data.tags["world_size"] == "2"
