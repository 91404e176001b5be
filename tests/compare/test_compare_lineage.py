"""Data lineage and the JSON interface, on a real MLflow store holding runs as training logs them (tags, final
eval metrics, the prep as a dataset input), without training: runs of two preps are never averaged, runs that
were not evaluated are listed apart, and `format=json` carries the documented fields."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from pipeline.compare import compare, main
from pipeline.report.stats import welch_interval
from pipeline.tracking import keys
from pipeline.tracking.lineage import log_prep_input
from pipeline.tracking.store import get_or_create_experiment, run_tags

EXPERIMENT = "lineage"
STUDY = "s1"
# 10-crop top-1 error (%) per run; the other errors are derived from it
BASELINE = {1: 40.0, 2: 42.0, 3: 41.0}
NO_LRN = {1: 43.0, 2: 44.0, 3: 42.0}


def two_preps(demo_shards: Path, root: Path) -> tuple[Path, Path]:
    """Two prep outputs of "the same" folder name whose manifests differ (lineage reads the manifest only)."""
    first, second = root / "a" / "shards", root / "b" / "shards"
    for folder in (first, second):
        folder.mkdir(parents=True)
        shutil.copy(demo_shards / "manifest.json", folder / "manifest.json")
    manifest = json.loads((second / "manifest.json").read_text())
    manifest["settings"]["quality"] = 75  # another prep: re-encoded at another JPEG quality
    (second / "manifest.json").write_text(json.dumps(manifest))
    return first, second


def log_training_run(client: MlflowClient, experiment_id: str, name: str, seed: int, top1: float | None,
                     prep: Path) -> str:  # fmt: skip
    tags = run_tags(name=name, seed=seed, study=STUDY, world_size=1, strategy="SingleDeviceStrategy")
    run_id = client.create_run(experiment_id, run_name=f"{name}-seed{seed}", tags=tags).info.run_id
    log_prep_input(client, run_id, prep)
    if top1 is not None:
        values = {keys.TENCROP_TOP1: top1, keys.TENCROP_TOP5: top1 / 2, keys.CENTER_TOP1: top1 + 1,
                  keys.CENTER_TOP5: top1 / 2 + 1}  # fmt: skip
        client.log_batch(run_id, metrics=[Metric(k, v / 100, 0, 1) for k, v in values.items()])
        client.set_tag(run_id, keys.TAG_EVAL_WEIGHTS, keys.EVAL_WEIGHTS_FINAL)
    client.set_terminated(run_id)
    return run_id


@pytest.fixture(scope="module")
def store(demo_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str], Path]:
    """The store (read only by the tests: compare runs with log=false), the runs' ids, the preps' folder."""
    root = tmp_path_factory.mktemp("lineage")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = get_or_create_experiment(client, EXPERIMENT)
    prep_a, prep_b = two_preps(demo_shards, root)
    ids = {}
    for name, errors in (("baseline", BASELINE), ("no_lrn", NO_LRN)):
        for seed, top1 in errors.items():
            ids[f"{name}-seed{seed}"] = log_training_run(client, experiment_id, name, seed, top1, prep_a)
    ids["no_lrn-seed4"] = log_training_run(client, experiment_id, "no_lrn", 4, 60.0, prep_b)  # other prep
    ids["baseline-seed5"] = log_training_run(client, experiment_id, "baseline", 5, None, prep_a)  # no eval
    return uri, ids, root


def test_runs_of_another_prep_are_listed_apart_never_averaged(store, tmp_path: Path):
    uri, ids, _ = store
    result = compare(uri, EXPERIMENT, STUDY, tmp_path / "out", log_report=False)
    assert [(row.experiment, row.n_runs, row.seeds) for row in result.rows] == [
        ("baseline", 3, ("1", "2", "3")),
        ("no_lrn", 3, ("1", "2", "3")),
    ]
    reasons = {item.run.run_name: item.reason for item in result.study.set_aside}
    digest_a = result.rows[0].dataset_digest
    assert reasons["no_lrn-seed4"].startswith("trained on another prep: dataset digest ")
    assert reasons["no_lrn-seed4"].endswith(f"the study's is {digest_a}")
    assert reasons["baseline-seed5"].startswith("finished without eval/tencrop_top1_error")
    assert f"run_id={ids['baseline-seed5']}" in reasons["baseline-seed5"]
    assert result.rows[1].errors["top1_tencrop"].mean == pytest.approx(sum(NO_LRN.values()) / 3)


def test_the_dataset_input_is_the_manifest(store):
    uri, ids, root = store
    run = MlflowClient(uri).get_run(ids["baseline-seed1"])
    [dataset_input] = run.inputs.dataset_inputs
    sha256 = hashlib.sha256((root / "a" / "shards" / "manifest.json").read_bytes()).hexdigest()
    dataset = dataset_input.dataset
    assert (dataset.name, dataset.digest, dataset.source_type) == ("shards", sha256[:32], "local")
    assert json.loads(dataset.source) == {"uri": str(root / "a" / "shards")}
    profile = json.loads(dataset.profile)
    assert (profile["train_samples"], profile["val_samples"], profile["classes"]) == (1438, 359, 10)
    assert run.data.tags[keys.TAG_DATA_MANIFEST_SHA256] == sha256
    assert run.data.tags[keys.TAG_KIND] == keys.KIND_TRAINING
    experiment = MlflowClient(uri).get_experiment_by_name(EXPERIMENT)
    assert experiment.tags[keys.TAG_EXPERIMENT_KIND] == keys.EXPERIMENT_KIND_TRAINING


def test_json_interface_holds_the_documented_fields(store, tmp_path: Path, capsys):
    uri, _, _ = store
    argv = [
        f"tracking_uri={uri}",
        f"experiment={EXPERIMENT}",
        f"study={STUDY}",
        f"out={tmp_path}",
        "format=json",
    ]
    assert main([*argv, "log=false"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["schema_version"] == 3 and document["paper_baseline"] == {
        "top1_tencrop": 40.7,
        "top5_tencrop": 18.2,
    }
    baseline, no_lrn = document["rows"]
    expected = welch_interval(list(NO_LRN.values()), list(BASELINE.values()))
    assert no_lrn["experiment"] == "no_lrn" and no_lrn["n"] == 3 and no_lrn["few_seeds"] is False
    assert no_lrn["top1_tencrop_mean"] == pytest.approx(sum(NO_LRN.values()) / 3)
    assert no_lrn["top1_tencrop_std"] == pytest.approx(1.0)
    assert no_lrn["top5_tencrop_mean"] == pytest.approx(sum(NO_LRN.values()) / 6)
    assert no_lrn["delta_top1_tencrop"] == pytest.approx(2.0)
    assert no_lrn["delta_top1_tencrop_ci95"] == pytest.approx([expected.low, expected.high])
    assert (no_lrn["paper_delta_top1"], no_lrn["paper_delta_top1_text"]) == (1.4, "+1.4")
    assert no_lrn["paper_delta_top1_in_ci95"] is (expected.low <= 1.4 <= expected.high)
    assert no_lrn["dataset_digest"] == baseline["dataset_digest"] and len(no_lrn["dataset_digest"]) == 32
    assert (baseline["delta_top1_tencrop"], baseline["delta_top1_tencrop_ci95"]) == (None, None)
    assert baseline["weights"] == "final"
    assert {item["run_name"] for item in document["set_aside"]} == {"no_lrn-seed4", "baseline-seed5"}
    assert "searchFilter=" in document["ui_url"] and "compareRunsMode=CHART" in document["ui_url"]
