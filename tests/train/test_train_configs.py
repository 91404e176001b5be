"""Every experiment composes, alone and on the demo profile; bad names and keys are Hydra's errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from pipeline.train import per_device_batch, study_name
from tests.helpers.paths import CONF_DIR, REPO
from tests.helpers.training import compose_train

EXPERIMENTS = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))


def test_the_paper_is_the_default():
    cfg = compose_train([])
    assert cfg.name == "baseline"
    assert cfg.data.batch_size == 128 and cfg.trainer.max_epochs == 90
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.01, 0.9, 5e-4)
    assert (cfg.optim.lr_factor, cfg.optim.max_lr_drops) == (0.1, 3)
    assert cfg.model.lrn and cfg.model.pool == "overlap" and cfg.model.groups == 2
    assert cfg.model.dropout == 0.5 and cfg.model.bias_init == 1.0
    assert cfg.data.pca_lighting == 0.1 and cfg.data.crop_size == cfg.model.in_size == 227


# demo with profile=paper is left out: the command line's profile=paper would override the demo experiment's
@pytest.mark.parametrize(
    ("experiment", "profile"),
    [(e, p) for e in EXPERIMENTS for p in ("paper", "demo") if (e, p) != ("demo", "paper")],
)
def test_every_experiment_composes(experiment, profile):
    overrides = [f"+experiment={experiment}", f"profile={profile}", "paths.output_dir=/tmp/x"]
    if profile == "paper" and experiment != "demo":
        overrides.append("data.root=/data/imagenet-shards")  # the paper scale names no data (data.root=???)
    cfg = compose_train(overrides)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert cfg.name == experiment
    if profile == "demo" or experiment == "demo":
        assert cfg.data.root == "demo/shards" and cfg.model.width < 1


@pytest.mark.parametrize(
    ("experiment", "key", "value"),
    [
        ("no_lrn", "model.lrn", False),
        ("no_overlap_pool", "model.pool", "non_overlap"),
        ("no_dropout", "model.dropout", 0.0),
        ("one_gpu_half", "model.one_gpu_half", True),
        ("no_pca_lighting", "data.pca_lighting", 0.0),
    ],
)
def test_each_ablation_changes_only_its_switch(experiment, key, value):
    base = OmegaConf.to_container(compose_train(["profile=demo"]))
    ablated = compose_train(["profile=demo", f"+experiment={experiment}"])
    assert OmegaConf.select(ablated, key) == value
    ablated_dict = OmegaConf.to_container(ablated)
    changed = {
        f"{group}.{name}"
        for group, node in ablated_dict.items()
        if isinstance(node, dict)
        for name, setting in node.items()
        if base[group].get(name) != setting
    }
    assert changed <= {key, "model.groups"}, changed


def test_trainer_choices_compose():
    assert compose_train(["trainer=ddp"]).trainer.strategy == "ddp"
    split = compose_train(["trainer=model_parallel"])
    assert list(split.model.split_devices) == ["cuda:0", "cuda:1"] and split.trainer.devices == 1


def test_wrong_key_is_a_hydra_error():
    with pytest.raises(ConfigCompositionException, match="model.lrnn"):
        compose_train(["model.lrnn=false"])


def test_wrong_experiment_name_fails_before_any_run(tmp_path):
    db = tmp_path / "mlflow.db"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.train",
            "+experiment=no_such_thing",
            f"logger.tracking_uri=sqlite:///{db}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "experiment/no_such_thing" in result.stderr
    assert not db.exists()  # no store, so no run
    assert not (tmp_path / "outputs").exists()


def test_global_batch_splits_over_processes():
    assert per_device_batch(128, 1) == 128
    assert per_device_batch(128, 8) == 16
    with pytest.raises(ValueError, match="data.batch_size=128"):
        per_device_batch(128, 3)


def test_study_is_the_run_name_outside_a_sweep():
    assert study_name(compose_train([]), "baseline-seed0") == "baseline-seed0"
    assert study_name(compose_train(["study=ablations"]), "baseline-seed0") == "ablations"
