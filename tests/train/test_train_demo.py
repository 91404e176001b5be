"""The demo experiment, as shipped (profile=demo), learns the digits: val top-1 error well below chance."""

from __future__ import annotations

import pytest

from pipeline.tracking import keys
from pipeline.train import train
from tests.helpers.training import compose_train, runs_of

CHANCE_TOP1_ERROR = 0.9  # 10 digit classes
WELL_BELOW_CHANCE = 0.6


@pytest.mark.slow
def test_the_demo_learns_the_digits(demo_shards, tmp_path, mlflow_uri, client):
    cfg = compose_train(
        [
            "+experiment=demo",
            f"data.root={demo_shards}",
            "trainer.enable_progress_bar=false",
            f"paths.output_dir={tmp_path / 'out'}",
            f"logger.tracking_uri={mlflow_uri}",
            "logger.experiment_name=demo_learns",
        ]
    )
    result = train(cfg)

    [run] = runs_of(client, "demo_learns")
    history = [m.value for m in client.get_metric_history(run.info.run_id, keys.VAL_TOP1)]
    assert 1 < len(history) <= cfg.trainer.max_epochs  # the lr policy may end it before max_epochs
    assert history[0] > 0.8  # it starts at chance...
    assert result[keys.VAL_TOP1] < WELL_BELOW_CHANCE < CHANCE_TOP1_ERROR  # ...and learns
