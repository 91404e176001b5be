"""Input-bound diagnosis in a real run: throughput/data_wait_fraction per epoch and MLflow's system metrics
land in the run, here with data.decode=device (the device path on the CPU)."""

from __future__ import annotations

import pytest

from pipeline.tracking import keys
from pipeline.train import train
from tests.helpers.training import compose_train, runs_of, shard_overrides, steps_of


@pytest.mark.slow
def test_wait_fraction_and_system_metrics_land_in_the_run(demo_shards, tmp_path, mlflow_uri, client):
    overrides = shard_overrides(demo_shards, tmp_path / "out", mlflow_uri, "input-bound") + [
        "data.decode=device",
        "trainer.max_epochs=2",
        "logger.system_metrics_interval_s=0.2",
    ]
    train(compose_train(overrides))

    [run] = runs_of(client, "input-bound")
    metrics = run.data.metrics
    assert 0 <= metrics[keys.DATA_WAIT_FRACTION] <= 1
    assert len(client.get_metric_history(run.info.run_id, keys.DATA_WAIT_FRACTION)) == 2  # one per epoch
    assert metrics[keys.IMAGES_PER_S] > 0
    for key in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
        assert key in metrics, sorted(metrics)
        assert len(steps_of(client, run.info.run_id, key)) >= 2


def test_system_metrics_are_on_by_default_and_can_be_switched_off():
    config = compose_train([])
    assert config.logger.system_metrics_interval_s > 0
    assert config.callbacks.system_metrics.interval_s == config.logger.system_metrics_interval_s
    assert config.callbacks.data_wait.warn_above == 0.1
    assert config.data.decode == "workers"
    assert compose_train(["logger.system_metrics_interval_s=0"]).callbacks.system_metrics.interval_s == 0
