"""Bad values are refused before anything is created: one line naming the setting, the value and what is
allowed; exit 2; no tracking store, no run; and a tracking URI's password never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alexnet_common.redact import redact_text, redact_uri
from pipeline.training.config_check import ConfigError, check_config
from tests.helpers.paths import REPO
from tests.helpers.training import SYNTHETIC, compose_train


@pytest.mark.parametrize(
    ("override", "setting", "allowed"),
    [
        ("optim.lr=-1", "optim.lr", "> 0"),
        ("data.batch_size=abc", "data.batch_size", "an integer >= 1"),
        ("model.dropout=1.5", "model.dropout", "< 1"),
        ("model.pool=max", "model.pool", "overlap, non_overlap"),
        ("model.in_size=100", "model.in_size", "4k + 11"),
        ("trainer.max_epochs=two", "trainer.max_epochs", "an integer"),
        ("logger.tracking_uri=localhost:5000", "logger.tracking_uri", "a URI"),
    ],
)
def test_bad_value_is_named_with_what_is_allowed(override: str, setting: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_config(compose_train([*SYNTHETIC, override]))
    assert raised.value.setting == setting
    assert allowed in str(raised.value)


def test_missing_data_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.root"):
        check_config(compose_train([f"data.root={tmp_path / 'nowhere'}"]))


def test_good_configs_pass() -> None:
    check_config(compose_train(list(SYNTHETIC)))
    check_config(compose_train([*SYNTHETIC, "profile=demo", "data=synthetic"]))


def test_cli_exits_2_in_one_line_and_creates_nothing(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    command = [sys.executable, "-m", "pipeline.train", *SYNTHETIC, "optim.lr=-1"]
    command += [f"logger.tracking_uri=sqlite:///{store}", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "pipeline.train: error: optim.lr=-1 is not allowed: a number > 0"
    ]
    assert not store.exists()  # no store, so no run: nothing was created


def test_password_in_unreachable_server_uri_is_masked(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pipeline.train", *SYNTHETIC]
    command += ["logger.tracking_uri=http://alice:hunter2@127.0.0.1:9/", f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    assert "unreachable" in done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    assert "alice:***@127.0.0.1:9" in done.stderr


def test_redaction_masks_passwords_only() -> None:
    assert redact_uri("postgresql://mlflow:s3cret@127.0.0.1:5432/mlflow") == (
        "postgresql://mlflow:***@127.0.0.1:5432/mlflow"
    )
    assert redact_uri("https://host/x?token=abc&page=2") == "https://host/x?token=***&page=2"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert redact_text("at http://u:p@h:1/ failed") == "at http://u:***@h:1/ failed"
