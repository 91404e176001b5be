"""pipeline.evaluate: centre crop and the paper's 10 crops, logged into the training run."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer

from pipeline.data import ShardDataModule
from pipeline.evaluate import _data_config_of, main
from pipeline.tracking import keys
from pipeline.train import train
from pipeline.training.evaluation import eval_datamodule, evaluate
from pipeline.training.module import AlexNetModule
from tests.helpers.training import compose_train, runs_of, shard_overrides

EVAL_KEYS = {
    keys.CENTER_TOP1,
    keys.CENTER_TOP5,
    keys.TENCROP_TOP1,
    keys.TENCROP_TOP5,
}


def test_evaluate_logs_both_protocols_into_the_training_run(demo_shards, tmp_path, mlflow_uri, client):
    overrides = shard_overrides(demo_shards, tmp_path / "out", mlflow_uri, "evaluate")
    result = train(compose_train([*overrides, "data.mean_subtraction=false"]))

    args = [f"run_id={result['run_id']}", f"tracking_uri={mlflow_uri}", "batch_size=8", "num_workers=0"]
    assert main([*args, "limit_batches=2"]) == 0

    [run] = runs_of(client, "evaluate")
    assert set(run.data.metrics) >= EVAL_KEYS
    for key in EVAL_KEYS:
        assert 0.0 <= run.data.metrics[key] <= 1.0
    # The run's own data settings, not the defaults: it trained without mean subtraction.
    data_config = _data_config_of(client, result["run_id"], tmp_path)
    assert data_config["mean_subtraction"] is False
    assert data_config["root"] == str(demo_shards)
    rebuilt = eval_datamodule(data_config, data_root=None, batch_size=8, num_workers=0, crop_size=227)
    assert rebuilt.mean_subtraction is False and rebuilt.pca_lighting == 0.0


def test_evaluate_needs_exactly_one_of_run_and_checkpoint(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["batch_size=8"])
    assert exit_info.value.code == 2
    assert "exactly one of run_id=ID, checkpoint=PATH and model_uri=URI" in capsys.readouterr().err


def test_the_centre_crop_of_ten_is_the_validation_crop(demo_shards):
    """evaluate's centre crop (one of ten_crop's, from the 256-px image) scores exactly as Lightning's
    validation loop with the data's own centre crop, on the same images."""
    torch.manual_seed(0)
    module = AlexNetModule(10, width=0.0625)
    data = ShardDataModule(demo_shards, batch_size=8, num_workers=0, pca_lighting=0.0)
    ours = evaluate(module, data, torch.device("cpu"), limit_batches=3)

    trainer = Trainer(accelerator="cpu", limit_val_batches=3, logger=False, enable_progress_bar=False)
    [lightning] = trainer.validate(module, datamodule=data, verbose=False)
    assert ours[keys.CENTER_TOP1] == lightning[keys.VAL_TOP1]
    assert ours[keys.CENTER_TOP5] == lightning[keys.VAL_TOP5]
