"""train(cfg) end to end on the demo shards into a real sqlite MLflow store: keys, tags, artifacts, resume."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pipeline.tracking import keys
from pipeline.train import train
from tests.helpers.mlflow_server import free_port
from tests.helpers.training import METRIC_KEYS, compose_train, runs_of, shard_overrides, steps_of

STEPS_PER_EPOCH = 3  # trainer.limit_train_batches in shard_overrides


def test_a_run_lands_with_every_key_tag_and_artifact(demo_shards, tmp_path, mlflow_uri, client):
    result = train(compose_train(shard_overrides(demo_shards, tmp_path / "out", mlflow_uri, "e2e")))

    [run] = runs_of(client, "e2e")
    assert run.info.run_id == result["run_id"] and run.info.status == "FINISHED"
    assert run.info.run_name == "baseline-seed0"
    assert set(run.data.metrics) >= METRIC_KEYS, METRIC_KEYS - set(run.data.metrics)
    for key in (keys.TRAIN_TOP1, keys.VAL_TOP1, keys.VAL_TOP5, keys.TRAIN_EPOCH_TOP1):
        assert 0.0 <= run.data.metrics[key] <= 1.0
    assert run.data.metrics["lr"] == pytest.approx(0.01)
    assert run.data.metrics[keys.IMAGES_PER_S] > 0
    tags = run.data.tags
    assert tags["experiment"] == "baseline" and tags["seed"] == "0" and tags["study"] == "baseline-seed0"
    assert tags["world_size"] == "1" and tags["strategy"] == "SingleDeviceStrategy"
    assert {"git_commit", "git_dirty", "host"} <= set(tags)
    params = run.data.params
    assert (
        params["model.width"] == "0.0625"
        and params["optim.lr"] == "0.01"
        and params["data.root"] == str(demo_shards)
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "figures", "checkpoints"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == [
        "figures/conv1_kernels.png"
    ]
    [best] = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert best.endswith(".ckpt")
    assert steps_of(client, run.info.run_id, keys.TRAIN_LOSS) == list(range(STEPS_PER_EPOCH))


def test_resuming_continues_the_same_run_and_step_count(demo_shards, tmp_path, mlflow_uri, client):
    def overrides(out: str, epochs: int, *extra: str) -> list[str]:
        base = shard_overrides(demo_shards, tmp_path / out, mlflow_uri, "resume")
        return [*base, f"trainer.max_epochs={epochs}", *extra]

    first = train(compose_train(overrides("first", 1)))
    ckpt_dir = tmp_path / "first" / "checkpoints"
    # a requeued job: the same ckpt_dir holds last.ckpt, so it resumes by itself
    requeued = train(compose_train(overrides("requeued", 2, f"paths.ckpt_dir={ckpt_dir}")))
    by_path = train(compose_train(overrides("by_path", 3, f"ckpt_path={ckpt_dir / 'last.ckpt'}")))
    by_run = train(compose_train(overrides("by_run", 4, f"resume_run_id={first['run_id']}")))

    assert first["run_id"] == requeued["run_id"] == by_path["run_id"] == by_run["run_id"]
    [run] = runs_of(client, "resume")
    assert run.info.status == "FINISHED"
    # four epochs of steps, none lost, none twice
    assert steps_of(client, run.info.run_id, keys.TRAIN_LOSS) == list(range(4 * STEPS_PER_EPOCH))
    assert len(steps_of(client, run.info.run_id, keys.VAL_TOP1)) == 4


def test_a_crash_leaves_the_run_failed(demo_shards, tmp_path, mlflow_uri, client):
    crash = [  # a real failure inside fit: early stopping on a metric nobody logs raises at validation end
        "+callbacks.crash._target_=lightning.pytorch.callbacks.EarlyStopping",
        "+callbacks.crash.monitor=val/no_such_metric",
    ]
    cfg = compose_train(shard_overrides(demo_shards, tmp_path / "out", mlflow_uri, "crash") + crash)
    with pytest.raises(RuntimeError, match="val/no_such_metric"):
        train(cfg)
    [run] = runs_of(client, "crash")
    assert run.info.status == "FAILED"
    assert keys.TRAIN_LOSS in run.data.metrics  # it did train before it crashed


def test_an_unreachable_server_fails_fast_naming_it(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    cfg = compose_train(["data=synthetic", f"paths.output_dir={tmp_path}", f"logger.tracking_uri={uri}"])
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=uri):
        train(cfg)
    assert time.monotonic() - started < 10
    assert not (tmp_path / "checkpoints").exists()


def test_tracking_uri_defaults_to_an_absolute_sqlite_file(tmp_path, monkeypatch):
    from pipeline.tracking.store import resolve_tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert resolve_tracking_uri("sqlite:///rel.db") == f"sqlite:///{tmp_path.resolve() / 'rel.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert resolve_tracking_uri(None) == "http://tracking:5000"
    assert resolve_tracking_uri("http://other:5000") == "http://other:5000"


def test_the_console_prints_each_line_once_and_nothing_off_topic(tmp_path):
    """Lightning's own console handler and Hydra's root handler would print every INFO line twice, with an
    advertisement for a hosted logger among them."""
    command = [
        sys.executable, "-m", "pipeline.train", "data=synthetic", "data.train_samples=32",
        "data.val_samples=16", "model.width=0.0625", "trainer.accelerator=cpu", "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
        "callbacks.conv1_figure=null",
        f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    console = result.stdout + result.stderr
    assert console.count("Seed set to 0") == 1
    assert console.count("`Trainer.fit` stopped") == 1
    assert "litlogger" not in console
