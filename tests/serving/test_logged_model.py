"""Every training run logs its net as an MLflow 3 LoggedModel: a pyfunc that takes images and answers the
top-5 classes, loadable in a fresh process, registered as a version, and scored again by pipeline.evaluate."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from data_prep.manifest import load_manifest
from pipeline.evaluate import main as evaluate_main
from pipeline.tracking import keys
from tests.helpers.mlflow_server import free_port, wait_healthy
from tests.helpers.paths import REPO
from tests.serving.conftest import REGISTERED_NAME, LoggedRun

EVAL_ERRORS = (keys.CENTER_TOP1, keys.CENTER_TOP5, keys.TENCROP_TOP1, keys.TENCROP_TOP5)

LOAD_AND_PREDICT = """
import json, sys, mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
with open(sys.argv[2], "rb") as image:
    answer = model.predict({"image": [image.read()]})
print(json.dumps({"modules": sorted(m for m in sys.modules if m.startswith("tests")),
                  "row": answer.iloc[0].to_dict()}))
"""


def test_the_run_has_a_logged_model_with_its_eval_metrics(logged_run: LoggedRun) -> None:
    client = MlflowClient(logged_run.uri)
    run = client.get_run(logged_run.run_id)
    [output] = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.source_run_id == logged_run.run_id
    assert model.name == "model"
    linked = {metric.key: metric.value for metric in model.metrics or []}
    for key in EVAL_ERRORS:
        assert linked[key] == pytest.approx(run.data.metrics[key])
    info = mlflow.models.get_model_info(logged_run.model_uri)
    assert info.signature.inputs.input_names() == ["image"]
    assert info.signature.params is not None


def test_the_model_loads_in_a_fresh_process_and_names_the_top5(
    logged_run: LoggedRun, unseen_jpeg: Path, demo_shards: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": logged_run.uri, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, logged_run.model_uri, str(unseen_jpeg)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["modules"] == []  # nothing of the test suite: the package alone loads it
    row = answer["row"]
    classes = {c.wnid: c.name for c in load_manifest(demo_shards).classes}
    assert len(row["wnids"]) == 5 and set(row["wnids"]) <= set(classes)
    assert row["names"] == [classes[wnid] for wnid in row["wnids"]]
    assert row["probabilities"] == sorted(row["probabilities"], reverse=True)
    assert 0.0 < sum(row["probabilities"]) <= 1.0 + 1e-6


def test_bytes_and_uint8_arrays_of_any_size_give_the_same_answer(
    logged_run: LoggedRun, unseen_jpeg: Path
) -> None:
    mlflow.set_tracking_uri(logged_run.uri)
    model = mlflow.pyfunc.load_model(logged_run.model_uri)
    pixels = np.asarray(Image.open(unseen_jpeg).convert("RGB"))
    from_bytes = model.predict(pd.DataFrame({"image": [unseen_jpeg.read_bytes()]}))
    from_array = model.predict(pd.DataFrame({"image": [pixels]}))
    assert from_bytes.iloc[0]["wnids"] == from_array.iloc[0]["wnids"]
    assert from_bytes.iloc[0]["probabilities"] == pytest.approx(from_array.iloc[0]["probabilities"])
    centre = model.predict(pd.DataFrame({"image": [pixels, pixels[:100, :300]]}), params={"crops": "center"})
    assert len(centre) == 2 and len(centre.iloc[1]["wnids"]) == 5


def test_registering_gives_a_version(logged_run: LoggedRun) -> None:
    client = MlflowClient(logged_run.uri)
    [version] = client.search_model_versions(f"name = '{REGISTERED_NAME}'")
    assert int(version.version) == 1
    assert version.run_id == logged_run.run_id
    assert version.status == "READY"


def test_evaluate_scores_a_registered_model_as_the_run_did(logged_run: LoggedRun, tmp_path: Path) -> None:
    """The shard_overrides run evaluated 2 val batches of 16 at its end; the same here, from the registry."""
    out = tmp_path / "eval.json"
    args = [
        f"model_uri=models:/{REGISTERED_NAME}/1", f"tracking_uri={logged_run.uri}",
        "batch_size=16", "num_workers=0", "limit_batches=2", f"out={out}",
    ]  # fmt: skip
    assert evaluate_main(args) == 0
    scored = json.loads(out.read_text())
    run = MlflowClient(logged_run.uri).get_run(logged_run.run_id)
    for key in EVAL_ERRORS:
        assert scored[key] == pytest.approx(run.data.metrics[key], abs=1e-6)
    assert scored[keys.EVAL_IMAGES] == run.data.metrics[keys.EVAL_IMAGES]


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_jpeg_over_rest(
    logged_run: LoggedRun, unseen_jpeg: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": logged_run.uri, "PYTHONPATH": str(REPO)}
    command = [
        str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", logged_run.model_uri,
        "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, server, log)
        body = {
            "dataframe_split": {
                "columns": ["image"],
                "data": [[base64.b64encode(unseen_jpeg.read_bytes()).decode()]],
            }
        }
        request = urllib.request.Request(
            f"{url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    finally:
        server.terminate()
        server.wait(timeout=30)
    [row] = answer["predictions"]
    model = mlflow.pyfunc.load_model(logged_run.model_uri)
    expected = model.predict(pd.DataFrame({"image": [unseen_jpeg.read_bytes()]})).iloc[0]
    assert row["wnids"] == expected["wnids"]
    assert row["probabilities"] == pytest.approx(expected["probabilities"], rel=1e-5)
