"""Fast checks without trainings: the paper's numbers and their sign, and the CLI's errors on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.compare import main
from pipeline.report.paper import PAPER_ABLATIONS, experiment_sort_key, paper_change


def test_paper_changes_are_the_published_reductions_as_increases_without_the_component():
    assert (paper_change("no_lrn", "top1"), paper_change("no_lrn", "top5")) == (1.4, 1.2)
    assert (paper_change("no_overlap_pool", "top1"), paper_change("no_overlap_pool", "top5")) == (0.4, 0.3)
    assert (paper_change("one_gpu_half", "top1"), paper_change("one_gpu_half", "top5")) == (1.7, 1.2)
    assert (paper_change("no_dropout", "top1"), paper_change("no_dropout", "top5")) == (None, None)
    assert paper_change("baseline", "top1") is None and paper_change("my_idea", "top5") is None
    assert set(PAPER_ABLATIONS) == {"no_lrn", "no_overlap_pool", "one_gpu_half", "no_dropout"}


def test_table_order_is_baseline_then_the_papers_ablations_then_the_rest():
    names = ["zeta", "no_dropout", "alpha", "no_lrn", "baseline", "one_gpu_half", "no_overlap_pool"]
    assert sorted(names, key=experiment_sort_key) == [
        "baseline", "no_lrn", "no_overlap_pool", "one_gpu_half", "no_dropout", "alpha", "zeta",
    ]  # fmt: skip


def test_unknown_paper_metric_is_a_value_error():
    with pytest.raises(ValueError, match="'top1' or 'top5'"):
        paper_change("no_lrn", "top3")


def test_missing_sqlite_store_is_named_and_not_created(tmp_path: Path, capsys):
    store = tmp_path / "nowhere.db"
    assert main([f"tracking_uri=sqlite:///{store}", f"out={tmp_path / 'out'}"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("python -m pipeline.compare: error: no MLflow store at")
    assert str(store) in error and "tracking_uri=" in error
    assert not store.exists()  # opening it would have created an empty store


def test_unknown_experiment_lists_the_stores_experiments(tmp_path: Path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("alexnet-study")
    assert main([f"tracking_uri={uri}", "experiment=alexnt", f"out={tmp_path / 'out'}"]) == 2
    error = capsys.readouterr().err
    assert "no MLflow experiment named 'alexnt'" in error and "alexnet-study" in error


def test_experiment_without_runs_is_an_error(tmp_path: Path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("empty")
    assert main([f"tracking_uri={uri}", "experiment=empty", f"out={tmp_path / 'out'}"]) == 2
    assert "no training runs in MLflow experiment 'empty'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
