"""Fast checks without trainings: the CLI's errors on bad input (the paper's numbers: test_report_stats)."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from pipeline.compare import main


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
