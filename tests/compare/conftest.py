"""The session's study of real trainings (see tests.helpers.compare_study), shared by every compare test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.train import train
from tests.helpers.compare_study import (
    EXPERIMENT_NAME,
    OTHER_STUDY,
    STUDY,
    TrainedStudy,
    run_sweep,
    tiny_overrides,
)
from tests.helpers.training import compose_train


@pytest.fixture(scope="session")
def trained_study(demo_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedStudy:
    root = tmp_path_factory.mktemp("compare-study")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    run_sweep(root, demo_shards, uri)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        crashing = compose_train(
            [*tiny_overrides(demo_shards, uri), "+experiment=no_lrn", "seed=3", f"study={STUDY}",
             "model.in_size=299", f"paths.output_dir={root / 'crashing'}"]
        )  # fmt: skip
        with pytest.raises(ValueError, match="smaller than the crop 299"):
            train(crashing)
        other = compose_train(
            [*tiny_overrides(demo_shards, uri), "+experiment=no_dropout", "seed=1", f"study={OTHER_STUDY}",
             f"paths.output_dir={root / 'other'}"]
        )  # fmt: skip
        train(other)
    finally:
        torch.set_num_threads(threads)
    return TrainedStudy(uri, EXPERIMENT_NAME, STUDY, root)
