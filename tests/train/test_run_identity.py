"""RunIdentity: which MLflow run a job writes to and which checkpoint it resumes, on each kind of process."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.tracking import keys
from pipeline.tracking.identity import IDENTITY_ENV, RunIdentity


def _resolve(tmp_path: Path, environ: dict[str, str] | None = None, **settings) -> RunIdentity:
    return RunIdentity.resolve(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment_name="identity",
        ckpt_dir=tmp_path / "ckpt",
        environ={} if environ is None else environ,
        **settings,
    )


def _checkpoint(path: Path, run_id: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({keys.CKPT_RUN_ID_KEY: run_id, "state_dict": {}, "loops": {}}, path)
    return path


@pytest.fixture(autouse=True)
def _no_exported_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IDENTITY_ENV, raising=False)


def test_a_fresh_job_opens_a_new_run_and_hands_it_to_the_ranks_lightning_starts(tmp_path: Path) -> None:
    identity = _resolve(tmp_path)
    assert (identity.run_id, identity.ckpt_path, identity.launcher) == (None, None, True)
    opened = identity.open(
        run_name="r", tags={"experiment": "x"}, params={"a.b": 1}, config_yaml="a:\n  b: 1\n"
    )
    run = MlflowClient(identity.tracking_uri).get_run(opened.run_id)
    assert run.data.tags[keys.TAG_CKPT_DIR] == str((tmp_path / "ckpt").resolve())
    assert run.data.params == {"a.b": "1"}
    assert json.loads(os.environ[IDENTITY_ENV]) == {"run_id": opened.run_id, "ckpt_path": ""}
    with opened.running():
        pass
    assert IDENTITY_ENV not in os.environ  # the next job of a sequential sweep is a new job


def test_a_job_stopped_before_its_first_checkpoint_finds_its_run_by_the_ckpt_dir_tag(tmp_path: Path) -> None:
    first = _resolve(tmp_path).open(run_name="r", tags={}, params={}, config_yaml="")
    os.environ.pop(IDENTITY_ENV)
    again = _resolve(tmp_path)
    assert (again.run_id, again.ckpt_path) == (first.run_id, None)


def test_the_newest_checkpoint_and_the_run_inside_it_win(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "ckpt" / "last.ckpt", "older-run")
    time.sleep(0.01)
    newest = _checkpoint(tmp_path / "ckpt" / "hpc_ckpt_1.ckpt", "newer-run")
    identity = _resolve(tmp_path)
    assert (identity.ckpt_path, identity.run_id) == (newest, "newer-run")


def test_ranks_inherit_the_identity_or_wait_for_the_broadcast(tmp_path: Path) -> None:
    handed = {IDENTITY_ENV: json.dumps({"run_id": "abc", "ckpt_path": "/x/last.ckpt"}), "LOCAL_RANK": "1"}
    inherited = _resolve(tmp_path, handed)
    assert (inherited.run_id, inherited.ckpt_path, inherited.launcher) == ("abc", Path("/x/last.ckpt"), False)
    srun_rank = _resolve(tmp_path, {"SLURM_PROCID": "1"})
    assert (srun_rank.run_id, srun_rank.launcher) == (None, False)
    opened = srun_rank.open(run_name="r", tags={}, params={}, config_yaml="")
    assert not (tmp_path / "mlflow.db").exists()  # only the launching process talks to MLflow
    assert opened.logger("r").outbox is None  # a logger that never sends, built before the broadcast


def test_a_missing_ckpt_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ckpt_path=.*nowhere.ckpt: no such checkpoint file"):
        _resolve(tmp_path, ckpt_path=tmp_path / "nowhere.ckpt")


def test_a_failing_block_marks_the_run_failed(tmp_path: Path) -> None:
    opened = _resolve(tmp_path).open(run_name="r", tags={}, params={}, config_yaml="")
    with pytest.raises(RuntimeError, match="boom"), opened.running():
        raise RuntimeError("boom")
    assert MlflowClient(opened.tracking_uri).get_run(opened.run_id).info.status == "FAILED"
