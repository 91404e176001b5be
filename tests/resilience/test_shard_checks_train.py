"""data.verify in training: with intact shards the loss curve is the same with the check on and off; a shard
changed by one byte after prep is skipped and counted (``skip``, the default) or ends the job naming it
(``fail``); every run records how many shards were checked and how many failed, and its data.verify tag."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from data_prep.manifest import load_manifest
from pipeline.data.spans import epoch_shards
from pipeline.tracking import keys
from pipeline.train import train
from tests.helpers.faults import flip_byte
from tests.helpers.resume import assert_same_curve, cli, job_overrides, loss_curve
from tests.helpers.training import compose_train, shard_overrides


def _last(uri: str, run_id: str, key: str) -> float:
    history = MlflowClient(uri).get_metric_history(run_id, key)
    assert history, f"no {key} in run {run_id}"
    return max(history, key=lambda metric: metric.step).value


def test_intact_shards_give_the_same_loss_curve_with_the_check_on_and_off(reference, demo_shards, tmp_path):
    """``reference``: the resume tests' uninterrupted job (2 epochs, 2 workers, data.verify=skip)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train(
        compose_train([*job_overrides(demo_shards, tmp_path / "out", uri, "off"), "data.verify=off"])
    )
    assert_same_curve(loss_curve(uri, result["run_id"]), reference.curve)
    client = MlflowClient(reference.uri)
    checked = client.get_run(reference.run_id)
    assert checked.data.tags[keys.TAG_DATA_VERIFY] == "skip" and checked.data.params["data.verify"] == "skip"
    train_shards = len(load_manifest(demo_shards).split("train").shards)
    assert _last(reference.uri, reference.run_id, keys.SHARDS_CHECKED) > train_shards // 2  # 2 x 128 samples
    assert _last(reference.uri, reference.run_id, keys.SHARDS_FAILED) == 0
    unchecked = MlflowClient(uri).get_run(result["run_id"])
    assert unchecked.data.tags[keys.TAG_DATA_VERIFY] == "off"
    assert _last(uri, result["run_id"], keys.SHARDS_CHECKED) == 0


@pytest.fixture
def changed_shards(demo_shards, tmp_path) -> tuple[Path, Path, int]:
    """A copy of the demo shards whose first train shard of epoch 0 has one byte flipped: (root, that
    shard, its samples)."""
    root = tmp_path / "shards"
    shutil.copytree(demo_shards, root)
    seed = int(compose_train(shard_overrides(root, tmp_path, "sqlite://", "x")).data.seed)
    listed = [(str(root / s.name), s.samples) for s in load_manifest(root).split("train").shards]
    first = next(epoch_shards(listed, seed=seed, epoch=0, shuffle=True))
    shard = Path(first.url)
    flip_byte(shard)  # same size: only the hash tells
    return root, shard, first.samples


def test_a_shard_changed_by_one_byte_is_skipped_counted_and_named(
    changed_shards, tmp_path, mlflow_uri, caplog
):
    root, shard, samples = changed_shards
    cfg = compose_train(shard_overrides(root, tmp_path / "out", mlflow_uri, "changed_shard"))
    with caplog.at_level(logging.WARNING, logger="pipeline.data"):
        result = train(cfg)
    assert _last(mlflow_uri, result["run_id"], keys.SKIPPED_SAMPLES) == samples
    assert _last(mlflow_uri, result["run_id"], keys.SHARDS_FAILED) == 1
    assert _last(mlflow_uri, result["run_id"], keys.SHARDS_CHECKED) >= 2  # the changed one and the next
    found = hashlib.sha256(shard.read_bytes()).hexdigest()
    expected = next(s.sha256 for s in load_manifest(root).split("train").shards if shard.name in s.name)
    assert f"shard {shard} does not match" in caplog.text
    assert f"sha256 {found}" in caplog.text and f"the manifest says {expected}" in caplog.text


def test_fail_ends_the_job_non_zero_naming_the_shard(changed_shards, tmp_path, mlflow_uri):
    root, shard, _ = changed_shards
    args = [*shard_overrides(root, tmp_path / "out", mlflow_uri, "changed_shard_fail"), "data.verify=fail"]
    done = cli(args, tmp_path, timeout=300)
    assert done.returncode != 0
    assert f"ShardCheckFailed: shard {shard} does not match" in done.stderr, done.stderr[-3000:]
    assert "data.verify=fail stops the job" in done.stderr
